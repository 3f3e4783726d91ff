"""The researcher role: a new mixer from a parent, inspirations and retrieved lessons.

    result = propose(client, {"id": "c000007", "spec": {...}, "metrics": {...}},
                     inspirations=[...], lessons=[...], mode="spec")
    if result.ok:
        write(result.code); write_json(result.proposal_json())
    for record in result.records: record_call(candidate_dir, record)

Inputs are plain dicts: a candidate is {"id", "spec" (dict or MixerSpec; spec mode), "code"
(code mode), "motivation", "metrics", "status"}; a lesson is a cognition entry's dict.
`spec` mode asks for JSON edits constrained by `proposal_schema(parent)`, so no edit can keep
a field's value; `apply_edits` builds the child and `render` writes it. `code` mode asks for a
whole file. Either way a copy of the parent (or of anything in `tried`) is not a proposal:
the model is asked again with the reason, up to `attempts` times.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from evolve.gates.check import DEFAULT_ALLOWED_IMPORTS
from evolve.config.loading import field_docs
from evolve.agents.client import LLMClient, mark_outcome
from evolve.agents.parse import extract_code, extract_json
from evolve.agents.prompts import (build, clip, flat_metrics, kernel_api, lessons_text, number,
                                prompt_chars, prompt_hash)
from evolve.agents.summarizer import fit_lines
from evolve.model.edits import EditError, apply_edits, describe_changes, proposal_schema
from evolve.model.render import describe, render, spec_from_source
from evolve.model.space import (FIELDS, OPTIONS, MixerSpec, SpecError, inert_fields,
                                spec_schema)
from evolve.gates.novelty import code_hash
from evolve.gates.static import CONTRACT

MIN_MOTIVATION = 10


@dataclass(kw_only=True)
class ResearchResult:
    """A proposal, or why the model gave none."""

    ok: bool
    mode: str
    parent_id: str
    motivation: str = ""
    code: str = ""
    """The mixer file: rendered from `spec` in spec mode, the model's file in code mode."""
    spec: MixerSpec | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    """One phrase per changed field (spec mode)."""
    error: str = ""
    """Why the last attempt failed (empty when ok)."""
    attempts: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def proposal_json(self) -> dict[str, Any]:
        """What the proposal file stores about the LLM side of this proposal."""
        last = self.records[-1] if self.records else {}
        return {"motivation": self.motivation, "parents": [self.parent_id],
                "proposer": f"llm-{self.mode}", "model": last.get("model"),
                "sampling": last.get("sampling"), "prompt_hash": last.get("prompt_hash"),
                "spec": self.spec.to_dict() if self.spec else None, "edits": self.edits,
                "changes": self.changes, "attempts": self.attempts}


def parent_spec(candidate: Mapping[str, Any]) -> MixerSpec:
    """The spec of a candidate dict: its 'spec', else the header of its rendered 'code'."""
    spec = candidate.get("spec")
    if isinstance(spec, MixerSpec):
        return spec
    if isinstance(spec, Mapping):
        return MixerSpec.from_dict(spec)
    if candidate.get("code"):
        return spec_from_source(str(candidate["code"]))
    raise ValueError(f"candidate {candidate.get('id')!r} has no 'spec' and no rendered 'code': "
                     "spec mode needs the parent's spec")


def propose(client: LLMClient, parent: Mapping[str, Any], *,
            inspirations: Sequence[Mapping[str, Any]] = (),
            lessons: Sequence[Mapping[str, Any]] = (), notes: str = "", feedback: str = "",
            mode: str | None = None, tried: Mapping[str, str] | None = None, max_edits: int = 3,
            attempts: int | None = None) -> ResearchResult:
    """Ask for a child of `parent`; `tried` maps spec digests and code hashes to candidate ids
    already in the run (a proposal equal to one is rejected and asked again)."""
    mode = mode or client.config.mode
    if mode not in ("spec", "code"):
        raise ValueError(f"mode={mode!r} is not valid; choose one of: spec, code")
    pid = str(parent.get("id", "parent"))
    result = ResearchResult(ok=False, mode=mode, parent_id=pid)
    tried = dict(tried or {})
    base = parent_spec(parent) if mode == "spec" else None
    if mode == "code" and not parent.get("code"):
        raise ValueError(f"code mode needs the parent's 'code' (candidate {pid!r} has none)")
    history: list[str] = [feedback] if feedback else []
    for attempt in range(1, (attempts or client.config.attempts) + 1):
        result.attempts = attempt
        messages = _messages(client, mode, parent, base, inspirations, lessons, notes,
                             history, max_edits)
        if base is not None:
            schema = _schema(base, max_edits)
            call = client.chat("researcher", messages, schema=schema)
        else:
            call = client.chat("researcher", messages, max_tokens=4 * client.config.max_tokens)
        call.record["prompt_hash"] = prompt_hash(messages)
        result.records.append(call.record)
        error = call.error if not call.ok else (
            _take_spec(call.text, base, result, tried, max_edits) if base is not None
            else _take_code(call.text, parent, result, tried))
        if not error and copied(result.motivation, messages):
            error = ("the motivation copies the prompt's words; say in your own words why "
                     "these changes should help")
        mark_outcome(call, ok=not error, error=error)
        if not error:
            result.ok, result.error = True, ""
            return result
        result.error = error
        result.motivation, result.code, result.spec, result.edits, result.changes = \
            "", "", None, [], []
        history.append(f"Attempt {attempt} was rejected: {error}")
    return result


def copied(text: str, messages: Sequence[Mapping[str, str]]) -> bool:
    """Whether `text` is a verbatim piece of the prompt (small models echo instructions)."""
    flat = " ".join(text.lower().split()).strip(" .")
    prompt = " ".join(" ".join(m["content"] for m in messages).lower().split())
    return len(flat) >= MIN_MOTIVATION and flat in prompt


def _schema(base: MixerSpec, max_edits: int) -> dict[str, Any]:
    """proposal_schema(base) without fields that have no effect in `base` (editing one alone
    changes nothing, the commonest waste of a small model's answer)."""
    schema = proposal_schema(base, max_edits=max_edits, min_motivation=MIN_MOTIVATION)
    inert = set(inert_fields(base))
    items = schema["properties"]["edits"]["items"]["anyOf"]
    schema["properties"]["edits"]["items"]["anyOf"] = [
        item for item in items if item["properties"]["field"]["const"] not in inert]
    return schema


def _take_spec(text: str, base: MixerSpec, result: ResearchResult, tried: Mapping[str, str],
               max_edits: int) -> str:
    found = extract_json(text)
    if not found.ok:
        return found.error
    value = found.value
    motivation = " ".join(str(value.get("motivation") or "").split())
    if len(motivation) < MIN_MOTIVATION:
        return "the answer has no motivation: say why the edits should help"
    edits = value.get("edits")
    if isinstance(edits, Mapping):  # a single edit without its list
        edits = [edits]
    if not isinstance(edits, list) or not edits:
        return 'the answer has no "edits" list'
    seen: set[Any] = set()
    unique = []
    for edit in edits:  # a field edited twice: keep its first edit
        key = edit.get("field") if isinstance(edit, Mapping) else id(edit)
        if key not in seen:
            seen.add(key)
            unique.append(edit)
    try:
        child = apply_edits(base, unique[:max_edits], repair=True)
    except (EditError, SpecError) as exc:
        return str(exc)
    digest = child.digest()
    if digest in tried:
        return (f"the edited design is the same as {tried[digest]}, which this run already "
                "tried: choose different edits")
    result.motivation = motivation
    result.spec = child
    result.edits = [{"field": f, "value": getattr(child, f)} for f in FIELDS
                    if getattr(child, f) != getattr(base, f)]
    result.changes = describe_changes(base, child)
    result.code = render(child, title=f"child of {result.parent_id}: {describe(child)}")
    return ""


def _take_code(text: str, parent: Mapping[str, Any], result: ResearchResult,
               tried: Mapping[str, str]) -> str:
    found = extract_code(text)
    if not found.ok:
        return found.error
    digest = code_hash(found.code)
    if digest == code_hash(str(parent["code"])):
        return "the file is a copy of the parent: change the mechanism, not just the layout"
    if digest in tried:
        return f"the file is the same as {tried[digest]}, which this run already tried"
    if len(found.motivation) < MIN_MOTIVATION:
        return "the answer has no motivation: start with 'Motivation: ...' before the code"
    result.code, result.motivation = found.code, found.motivation
    return ""


def _messages(client: LLMClient, mode: str, parent: Mapping[str, Any], base: MixerSpec | None,
              inspirations: Sequence[Mapping[str, Any]], lessons: Sequence[Mapping[str, Any]],
              notes: str, history: list[str], max_edits: int) -> list[dict[str, str]]:
    """The prompt, shrunk step by step (choice notes, then history) to the context budget."""
    budget = client.config.context_chars
    pid = str(parent.get("id", "parent"))
    values: dict[str, Any] = {
        "parent_id": pid, "parent_results": _results(parent),
        "notes": f"NOTES FROM EARLIER ROUNDS:\n{notes}" if notes else "",
        "feedback": "\n".join(history[-2:])}
    if base is not None:
        inert = inert_fields(base)
        values.update(parent_description=describe(base), parent_spec=base.to_json(),
                      max_edits=max_edits, inert=f" Leave {', '.join(inert)} alone: they have "
                      "no effect in this parent." if inert else "")
    else:
        values.update(parent_description=str(parent.get("motivation") or "the parent mixer"),
                      parent_code=str(parent["code"]).strip(), contract=CONTRACT,
                      allowed_imports=", ".join(DEFAULT_ALLOWED_IMPORTS), kernels=kernel_api())
    share = budget // 5
    for detail in DETAIL:
        if base is not None:
            values["design_space"] = design_space(detail)
        values["inspirations"] = fit_lines([_one_line(c) for c in inspirations], share)
        values["lessons"] = fit_lines([lessons_text([e]) for e in lessons], share)
        messages = build(f"researcher_{mode}", **values)
        if prompt_chars(messages) <= budget:
            return messages
    share = budget // 20
    values["inspirations"] = fit_lines([_one_line(c) for c in inspirations], share)
    values["lessons"] = fit_lines([lessons_text([e]) for e in lessons], share)
    values["notes"] = clip(values["notes"], share)
    return build(f"researcher_{mode}", **values)


DETAIL = ("notes", "docs", "bare")


@cache
def design_space(detail: str = "notes") -> str:
    """Every field of the design space with its choices: with each choice's note ('notes'),
    with the field's docstring ('docs'), or the choices alone ('bare').

    The same for every parent, so it sits in the system prompt, where llama.cpp's prompt
    cache reuses it from one proposal to the next.
    """
    if detail not in DETAIL:
        raise ValueError(f"detail={detail!r} is not valid; choose one of: {', '.join(DETAIL)}")
    docs = field_docs(MixerSpec)
    lines = []
    for name, prop in spec_schema()["properties"].items():
        if detail == "notes":
            choices = "; ".join(f"{json.dumps(c)} = {OPTIONS[name][c]}" for c in prop["enum"])
        else:
            choices = ", ".join(json.dumps(c) for c in prop["enum"])
        doc = f" {docs.get(name, '')} Choices:" if detail != "bare" else ""
        lines.append(f"- {name}:{doc} {choices}")
    return "\n".join(lines)


def _results(candidate: Mapping[str, Any]) -> str:
    status = candidate.get("status")
    figures = list(flat_metrics(candidate.get("metrics")).items())[:8]
    if not figures:
        return f"no results ({status})" if status else "no results yet"
    return ", ".join(f"{key} {number(value)}" for key, value in figures)


def _one_line(candidate: Mapping[str, Any]) -> str:
    what = candidate.get("description") or ""
    spec = candidate.get("spec")
    if not what and spec:
        try:
            what = describe(spec if isinstance(spec, MixerSpec) else MixerSpec.from_dict(spec))
        except SpecError:
            what = ""
    motivation = clip(" ".join(str(candidate.get("motivation") or "").split()), 200)
    return (f"- {candidate.get('id', '?')}: {what or 'custom code'}; {_results(candidate)}"
            + (f"; idea: {motivation}" if motivation else ""))
