"""Prompt templates (evolve/agents/prompts/*.txt) and the text blocks built from a run's data.

    messages = build("researcher_spec", parent=..., lessons=...)   # [{"role": "system", ...}, ...]
    prompt_hash(messages)                                          # 16 hex digits

A template holds a `### system` and a `### user` section; `$name` placeholders are filled with
`string.Template` (a literal dollar is `$$`). Every prompt lives in one template file; the
functions below only turn plain data (candidates, metrics, lessons) into text.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

_SECTION = re.compile(r"^### (system|user)[ \t]*$", re.M)


@cache
def template(name: str) -> dict[str, string.Template]:
    """The sections of prompts/<name>.txt; ValueError naming the file and the valid names."""
    folder = resources.files("evolve.agents") / "prompts"
    path = folder / f"{name}.txt"
    if not re.fullmatch(r"[a-z_]+", name) or not path.is_file():
        valid = sorted(Path(str(p)).stem for p in folder.iterdir() if str(p).endswith(".txt"))
        raise ValueError(f"no prompt template {name!r}; valid: {', '.join(valid)}")
    text = path.read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    sections = {parts[i]: string.Template(parts[i + 1].strip("\n")) for i in range(1, len(parts), 2)}
    if set(sections) != {"system", "user"}:
        raise ValueError(f"prompt template {path} needs a '### system' and a '### user' section")
    return sections


def build(name: str, **values: Any) -> list[dict[str, str]]:
    """Chat messages from template `name`; every placeholder must be given."""
    out = []
    for role, tmpl in template(name).items():
        try:
            content = tmpl.substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise ValueError(f"prompt template {name}.txt needs a value for ${exc.args[0]}") from None
        out.append({"role": role, "content": re.sub(r"\n{3,}", "\n\n", content).strip() + "\n"})
    return out


def prompt_chars(messages: Sequence[Mapping[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def prompt_hash(messages: Sequence[Mapping[str, str]]) -> str:
    """16 hex digits identifying a prompt (for the proposal file)."""
    text = json.dumps(list(messages), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flat_metrics(metrics: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) metrics dict, keyed by dotted path; non-numbers dropped."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_metrics(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            out[name] = float(value)
    return out


def number(value: float) -> str:
    """A figure as a prompt shows it: 4 significant digits."""
    return f"{value:.4g}"


def metrics_table(rows: Sequence[tuple[str, Mapping[str, Any] | None]], *,
                  max_keys: int = 16) -> str:
    """A plain-text table of the numeric metrics of each (label, metrics) row.

    Columns are the keys the first row has (the candidate), at most `max_keys`; a missing
    value is '-'.
    """
    flats = [(label, flat_metrics(m)) for label, m in rows]
    if not flats or not flats[0][1]:
        return "(no metrics)"
    keys = list(flats[0][1])[:max_keys]
    lines = ["name | " + " | ".join(keys)]
    for label, flat in flats:
        cells = [number(flat[k]) if k in flat else "-" for k in keys]
        lines.append(f"{label} | " + " | ".join(cells))
    return "\n".join(lines)


def curve_summary(points: Iterable[Mapping[str, Any]], *, keys: Sequence[str] = ("loss",),
                  marks: int = 5) -> str:
    """Each track's curve as a few (step: value) marks, its minimum, and the mean tokens/s."""
    tracks: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        tracks.setdefault(str(p.get("track", "train")), []).append(p)
    lines = []
    for track, rows in tracks.items():
        rows = [r for r in rows if isinstance(r.get("step"), (int, float))]
        for key in keys:
            values = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if not values:
                continue
            picks = sorted({round(i * (len(values) - 1) / max(marks - 1, 1))
                            for i in range(marks)})
            shown = ", ".join(f"{values[i][0]}: {number(values[i][1])}" for i in picks)
            low = min(v for _, v in values)
            lines.append(f"{track} {key} by step: {shown} (min {number(low)})")
        speeds = [r["tokens_per_s"] for r in rows if isinstance(r.get("tokens_per_s"),
                                                                 (int, float))]
        if speeds:
            lines.append(f"{track} throughput: {number(sum(speeds) / len(speeds))} tokens/s")
    return "\n".join(lines) or "(no curve)"


def lessons_text(entries: Iterable[Mapping[str, Any]], *, with_ids: bool = False) -> str:
    """Retrieved cognition entries as bullet points (title, insight, guidance, source)."""
    lines = []
    for e in entries:
        ident = f"[{e.get('id')}] " if with_ids else ""
        guidance = f" Guidance: {e['guidance']}" if e.get("guidance") else ""
        source = f" ({e['source']})" if e.get("source") else ""
        lines.append(f"- {ident}{e.get('title', '')}: {e.get('insight', '')}{guidance}{source}")
    return "\n".join(lines) or "(none yet)"


@cache
def kernel_api() -> str:
    """One line per public function of evolve.kernels: its signature and the docstring's
    first sentence, read from the source without importing torch."""
    spec = importlib.util.find_spec("evolve.kernels")
    if spec is None or spec.origin is None:
        return "(evolve.kernels is not installed)"
    folder = Path(spec.origin).parent
    public: set[str] = set()
    for node in ast.parse(Path(spec.origin).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                for t in node.targets):
            public = set(ast.literal_eval(node.value))
    lines = []
    for node in ast.parse((folder / "dispatch.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name in public and node.args.args:
            doc = " ".join((ast.get_docstring(node) or "").split("\n\n")[:2])
            lines.append(f"- {node.name}({ast.unparse(node.args)}): {' '.join(doc.split())}")
    return "\n".join(lines)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, keeping its head and tail (tracebacks end in the
    interesting line)."""
    if len(text) <= limit:
        return text
    head = max(limit // 3, 0)
    tail = max(limit - head - 40, 0)
    return f"{text[:head]}\n[... {len(text) - head - tail:,} characters cut ...]\n{text[-tail:]}"
