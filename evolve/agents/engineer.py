"""The engineer role: repair a mixer file that failed a check or a training, in bounded rounds.

    result = repair(client, code, gate="smoke", message=verdict.message, traceback=tb,
                    check=lambda code: run_gates(code))   # -> (passed, gate, message)
    if result.ok: write(result.code)
    for record in result.records: record_call(candidate_dir, record)

Each round sends the current file and the latest failure; the answer's file replaces the
current one only if it parses, and `check` (when given) decides whether it is fixed. Without a
check, a parsing answer is returned with `verified=False`. The model's text is only ever
returned as the file's content: the caller writes it inside the candidate folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evolve.gates.check import DEFAULT_ALLOWED_IMPORTS
from evolve.agents.client import LLMClient, mark_outcome
from evolve.agents.parse import extract_code
from evolve.agents.prompts import build, clip, kernel_api, prompt_chars, prompt_hash
from evolve.gates.novelty import code_hash
from evolve.gates.static import CONTRACT

Check = Callable[[str], tuple[bool, str, str]]
"""check(code) -> (passed, gate, message): the gates the repaired file must pass."""


@dataclass(kw_only=True)
class RepairResult:
    """The repaired file, or the record of every failed round."""

    ok: bool
    code: str
    """The repaired file when ok; else the last version that parsed (maybe the original)."""
    verified: bool = False
    """True when `check` passed on `code`."""
    fix: str = ""
    """The model's one-sentence account of its change."""
    error: str = ""
    """Why the last round failed (empty when ok)."""
    attempts: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per round: {"attempt", "gate", "message"} of the failure it was shown and its outcome."""
    records: list[dict[str, Any]] = field(default_factory=list)


def repair(client: LLMClient, code: str, *, gate: str, message: str, traceback: str = "",
           check: Check | None = None, attempts: int | None = None) -> RepairResult:
    """Up to `attempts` (default config.repair_attempts) rounds of fixing `code`."""
    result = RepairResult(ok=False, code=code)
    current, failure = code, (gate, message, traceback)
    for attempt in range(1, (attempts or client.config.repair_attempts) + 1):
        result.attempts = attempt
        messages = _messages(client, current, *failure, result.history)
        call = client.chat("engineer", messages, max_tokens=4 * client.config.max_tokens,
                           temperature=min(client.config.temperature, 0.4))
        call.record["prompt_hash"] = prompt_hash(messages)
        result.records.append(call.record)
        step: dict[str, Any] = {"attempt": attempt, "gate": failure[0],
                                "message": clip(failure[1], 600)}
        result.history.append(step)
        error = call.error
        found = None
        if call.ok:
            found = extract_code(call.text)
            error = found.error
            if not error and code_hash(found.code) == code_hash(current):
                error = "the answer returns the file unchanged"
        if error or found is None:
            step["outcome"] = error
            mark_outcome(call, ok=False, error=error)
            result.error = error
            continue
        current, result.fix = found.code, found.motivation
        if check is None:
            step["outcome"] = "parses (not checked)"
            mark_outcome(call, ok=True, verified=False)
            result.ok, result.code, result.error = True, current, ""
            return result
        passed, new_gate, new_message = check(current)
        if passed:
            step["outcome"] = "fixed"
            mark_outcome(call, ok=True, verified=True)
            result.ok, result.verified, result.code, result.error = True, True, current, ""
            return result
        error = f"still fails the {new_gate} check: {clip(new_message, 400)}"
        step["outcome"] = error
        mark_outcome(call, ok=False, error=error)
        result.error, result.code = error, current
        failure = (new_gate, new_message, "")
    return result


def _messages(client: LLMClient, code: str, gate: str, message: str, traceback: str,
              history: list[dict[str, Any]]) -> list[dict[str, str]]:
    budget = client.config.context_chars
    earlier = [f"Round {h['attempt']}: {h.get('outcome', '')}" for h in history[-3:]]
    values = {"gate": gate, "message": clip(message, budget // 6),
              "traceback": f"Traceback:\n{clip(traceback, budget // 5)}" if traceback else "",
              "history": ("Earlier repair rounds:\n" + "\n".join(earlier)) if earlier else "",
              "contract": CONTRACT, "allowed_imports": ", ".join(DEFAULT_ALLOWED_IMPORTS),
              "kernels": kernel_api(), "code": code.strip()}
    messages = build("engineer", **values)
    if prompt_chars(messages) > budget:  # the file must stay whole: shrink the rest
        values.update(message=clip(message, budget // 12), kernels="(see the file's imports)",
                      traceback=f"Traceback:\n{clip(traceback, budget // 12)}" if traceback
                      else "")
        messages = build("engineer", **values)
    return messages
