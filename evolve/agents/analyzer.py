"""The analyzer role: compare a finished candidate with its parent and the baselines.

    result = analyze(client, candidate, parent=parent, baselines=[gla, deltanet],
                     entries=retrieved_entries, run="myrun")
    result.analysis, result.lessons      # lessons: title, trigger, insight, guidance, evidence,
                                         # relation, about, source
    for record in result.records: record_call(candidate_dir, record)

A candidate (and a parent or baseline) is a dict: {"id", "motivation", "spec" or
"description", "status", "metrics" (the result file's), "curve" (metrics.jsonl rows)}. The answer
is constrained by `analysis_schema`; lessons are checked field by field and bad ones dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evolve.agents.client import LLMClient, mark_outcome
from evolve.agents.parse import extract_json
from evolve.agents.prompts import (build, clip, curve_summary, lessons_text, metrics_table,
                                prompt_chars, prompt_hash)
from evolve.model.render import describe
from evolve.model.space import MixerSpec, SpecError

LESSON_FIELDS = ("title", "trigger", "insight", "guidance", "evidence")
RELATIONS = ("supports", "contradicts", "new")


@dataclass(kw_only=True)
class AnalysisResult:
    """The analysis and lessons, or why there are none."""

    ok: bool
    candidate_id: str
    analysis: str = ""
    lessons: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    attempts: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def analysis_json(self) -> dict[str, Any]:
        """What analysis.json stores."""
        last = self.records[-1] if self.records else {}
        return {"candidate": self.candidate_id, "ok": self.ok, "analysis": self.analysis,
                "lessons": self.lessons, "error": self.error, "model": last.get("model"),
                "attempts": self.attempts}


def analysis_schema(entry_ids: Sequence[str] = (), max_lessons: int = 3) -> dict[str, Any]:
    """JSON schema of the analyzer's answer: an analysis and 1..max_lessons lessons."""
    text = {"type": "string", "minLength": 10, "maxLength": 600}
    lesson = {"type": "object",
              "properties": {**{name: dict(text) for name in LESSON_FIELDS},
                             "relation": {"enum": list(RELATIONS)},
                             "about": {"enum": [*entry_ids, "none"]}},
              "required": [*LESSON_FIELDS, "relation", "about"], "additionalProperties": False}
    lesson["properties"]["title"] = {"type": "string", "minLength": 3, "maxLength": 120}
    return {"type": "object",
            "properties": {"analysis": {"type": "string", "minLength": 20, "maxLength": 2000},
                           "lessons": {"type": "array", "minItems": 1, "maxItems": max_lessons,
                                       "items": lesson}},
            "required": ["analysis", "lessons"], "additionalProperties": False}


def analyze(client: LLMClient, candidate: Mapping[str, Any], *,
            parent: Mapping[str, Any] | None = None,
            baselines: Sequence[Mapping[str, Any]] = (),
            entries: Sequence[Mapping[str, Any]] = (), run: str = "", max_lessons: int = 3,
            attempts: int | None = None) -> AnalysisResult:
    """Analyse `candidate`; each lesson's source names the run and the candidates compared."""
    cid = str(candidate.get("id", "candidate"))
    result = AnalysisResult(ok=False, candidate_id=cid)
    ids = [str(e["id"]) for e in entries if e.get("id")]
    schema = analysis_schema(ids, max_lessons)
    pid = str(parent.get("id")) if parent else "none"
    source = f"run {run}: " if run else ""
    source += f"{cid} vs parent {pid}" if parent else cid
    history: list[str] = []
    for attempt in range(1, (attempts or client.config.attempts) + 1):
        result.attempts = attempt
        messages = _messages(client, candidate, parent, baselines, entries, max_lessons, history)
        call = client.chat("analyzer", messages, schema=schema,
                           temperature=min(client.config.temperature, 0.3),
                           max_tokens=max(client.config.max_tokens, 1024))
        call.record["prompt_hash"] = prompt_hash(messages)
        result.records.append(call.record)
        error = call.error
        if call.ok:
            error = _take(call.text, result, set(ids), source, max_lessons)
        mark_outcome(call, ok=not error, error=error, lessons=len(result.lessons))
        if not error:
            result.ok, result.error = True, ""
            return result
        result.error = error
        history.append(f"Your previous answer was rejected: {error}")
    return result


def _take(text: str, result: AnalysisResult, ids: set[str], source: str,
          max_lessons: int) -> str:
    found = extract_json(text)
    if not found.ok:
        return found.error
    analysis = " ".join(str(found.value.get("analysis") or "").split())
    if len(analysis) < 20:
        return 'the answer has no "analysis" (at least a sentence)'
    raw = found.value.get("lessons")
    raw = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(raw, list):
        return 'the answer has no "lessons" list'
    lessons, problems = [], []
    for i, item in enumerate(raw[:max_lessons], 1):
        lesson, problem = _lesson(item, ids, source)
        if lesson:
            lessons.append(lesson)
        else:
            problems.append(f"lesson {i}: {problem}")
    if not lessons:
        return "no usable lesson: " + ("; ".join(problems) or "the list is empty")
    result.analysis, result.lessons = analysis, lessons
    return ""


def _lesson(item: Any, ids: set[str], source: str) -> tuple[dict[str, str] | None, str]:
    if not isinstance(item, Mapping):
        return None, "not an object"
    lesson = {name: " ".join(str(item.get(name) or "").split())[:600] for name in LESSON_FIELDS}
    empty = [name for name in ("title", "insight") if len(lesson[name]) < 3]
    if empty:
        return None, f"missing {', '.join(empty)}"
    relation = str(item.get("relation") or "new").strip().lower()
    about = str(item.get("about") or "none").strip()
    if about not in ids:
        about = "none"
    if relation not in RELATIONS or about == "none":
        relation = "new"
    lesson.update(relation=relation, about=about, source=source)
    return lesson, ""


def _label(candidate: Mapping[str, Any]) -> str:
    what = candidate.get("description")
    spec = candidate.get("spec")
    if not what and spec:
        try:
            what = describe(spec if isinstance(spec, MixerSpec) else MixerSpec.from_dict(spec))
        except SpecError:
            what = None
    return str(what or "custom code")


def _messages(client: LLMClient, candidate: Mapping[str, Any], parent: Mapping[str, Any] | None,
              baselines: Sequence[Mapping[str, Any]], entries: Sequence[Mapping[str, Any]],
              max_lessons: int, history: list[str]) -> list[dict[str, str]]:
    budget = client.config.context_chars
    rows = [(f"{candidate.get('id', 'candidate')} (candidate)", candidate.get("metrics"))]
    if parent:
        rows.append((f"{parent.get('id', 'parent')} (parent)", parent.get("metrics")))
    rows += [(f"{b.get('id', 'baseline')} (baseline)", b.get("metrics")) for b in baselines]
    curves = [f"{candidate.get('id')}: {curve_summary(candidate.get('curve') or [])}"]
    if parent and parent.get("curve"):
        curves.append(f"{parent.get('id')}: {curve_summary(parent['curve'])}")
    status = str(candidate.get("status") or "ok")
    if candidate.get("reason"):
        status += f" ({clip(str(candidate['reason']), 300)})"
    values = {"candidate_id": candidate.get("id", "candidate"),
              "candidate_description": _label(candidate),
              "parent_id": parent.get("id", "none") if parent else "none",
              "motivation": clip(str(candidate.get("motivation") or "(none)"), 600),
              "status": status, "table": metrics_table(rows), "curves": "\n".join(curves),
              "entries": lessons_text(entries, with_ids=True), "max_lessons": max_lessons}
    messages = build("analyzer", **values)
    if history:
        messages[-1]["content"] += "\n" + history[-1] + "\n"
    if prompt_chars(messages) > budget:
        values.update(entries=clip(str(values["entries"]), budget // 6),
                      table=metrics_table(rows, max_keys=8), curves=clip(values["curves"],
                                                                         budget // 6))
        messages = build("analyzer", **values)
    return messages
