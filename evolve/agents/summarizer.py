"""The summarizer role: compress long histories so that prompts fit the model's context.

    text = fit_lines(lines, budget=2000)                   # deterministic: newest lines kept
    result = summarize(client, history_text, budget=3000)  # the LLM compresses; always fits
    result.text, result.records

`summarize` never returns more than `budget` characters: when the model fails or overshoots,
the text is cut deterministically (head and tail kept) and the failure is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evolve.agents.client import LLMClient, mark_outcome
from evolve.agents.prompts import build, clip


@dataclass(kw_only=True)
class SummaryResult:
    """A compressed text and how it was made."""

    text: str
    """At most `budget` characters."""
    ok: bool
    """False when the model failed and the text was cut deterministically instead."""
    compressed: bool
    """False when the input already fitted (no call was made)."""
    error: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)


def fit_lines(lines: Sequence[str], budget: int, *, empty: str = "(none yet)") -> str:
    """The newest (last) lines that fit in `budget` characters, oldest first; a line longer
    than the whole budget is cut. Notes how many older lines were left out."""
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        cost = len(line) + 1
        if used + cost > budget:
            if not kept:
                kept.append(clip(line, max(budget - 1, 0)))
            break
        kept.append(line)
        used += cost
    dropped = len(lines) - len(kept)
    if dropped > 0:
        kept.append(f"({dropped} older entries left out)")
    return "\n".join(reversed(kept)) or empty


def summarize(client: LLMClient, text: str, *, budget: int, topic: str = "earlier rounds",
              max_rounds: int = 2) -> SummaryResult:
    """`text` compressed to at most `budget` characters by the model (chunked when `text`
    exceeds the prompt budget); deterministic clipping when that fails."""
    if budget < 1:
        raise ValueError(f"budget={budget} must be >= 1 characters")
    if len(text) <= budget:
        return SummaryResult(text=text, ok=True, compressed=False)
    records: list[dict[str, Any]] = []
    chunk = max(client.config.context_chars - 1000, 1000)  # room for the instructions
    current, error = text, ""
    for _ in range(max_rounds):
        pieces = [current[i:i + chunk] for i in range(0, len(current), chunk)]
        share = max(budget // len(pieces), 200)
        out = []
        for piece in pieces:
            summary, error = _one(client, piece, share, topic, records)
            if summary is None:
                break
            out.append(summary)
        else:
            current = "\n".join(out)
            if len(current) <= budget:
                return SummaryResult(text=current, ok=True, compressed=True, records=records)
            error = f"the summary has {len(current):,} characters, over the budget {budget:,}"
            continue
        break
    return SummaryResult(text=clip(current, budget), ok=False, compressed=True, error=error,
                         records=records)


def _one(client: LLMClient, text: str, budget: int, topic: str,
         records: list[dict[str, Any]]) -> tuple[str | None, str]:
    messages = build("summarizer", topic=topic, budget=budget, text=text)
    # About 3 characters per token, and some slack so that a close miss can still be cut.
    call = client.chat("summarizer", messages, temperature=min(client.config.temperature, 0.3),
                       max_tokens=max(64, budget // 2))
    records.append(call.record)
    if not call.ok:
        mark_outcome(call, ok=False, error=call.error)
        return None, call.error
    summary = call.text.strip()
    if not summary:
        mark_outcome(call, ok=False, error="empty answer")
        return None, "empty answer"
    if len(summary) > budget:
        summary = clip(summary, budget)
    mark_outcome(call, ok=True, chars=len(summary))
    return summary, ""
