"""Edits of a spec: how spec-mode proposals (LLM or mutator) turn a parent into a child.

A proposal is a list of at least one edit, and each edit's allowed values exclude the parent's
current value, so a model constrained by `edits_schema(parent)` cannot copy its parent:

    schema = edits_schema(parent)   # JSON schema: [{"field": "beta", "value": "sigmoid2"}, ...]
    schema = proposal_schema(parent)  # {"motivation": "...", "edits": [...]}: an object root
    child = apply_edits(parent, [{"field": "beta", "value": "sigmoid2"}])
    describe_changes(parent, child) # ["changed beta from sigmoid to sigmoid2 (...)"]

`apply_edits` raises EditError naming every bad edit and the valid choices; with repair=True
it also makes the smallest changes to other fields that the rules require (e.g. qk_norm='l2'
when an edit switches to the delta rule).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evolve.model.space import (
    FIELDS,
    OPTIONS,
    MixerSpec,
    SpecError,
    Value,
    coerce_choice,
    field_schema,
    repair as repair_values,
    spec_problems,
)


JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"


class EditError(SpecError):
    """A list of edits cannot be applied; the message names each bad edit and the valid choices."""


@dataclass(frozen=True, kw_only=True)
class Edit:
    """Set one field of a spec to a new value."""

    field: str
    """A MixerSpec field name."""
    value: Value
    """The new value: one of the field's choices, different from the parent's."""

    def to_dict(self) -> dict[str, Value]:
        return {"field": self.field, "value": self.value}


def allowed_values(parent: MixerSpec, name: str, *, allow_quadratic: bool = False) -> list[Value]:
    """The choices of field `name` that an edit of `parent` may set: all but the current one."""
    current = getattr(parent, name)
    return [c for c in OPTIONS[name] if c != current
            and (allow_quadratic or not (name == "update_rule" and c == "softmax"))]


def edits_schema(parent: MixerSpec, *, max_edits: int = 3, allow_quadratic: bool = False
                 ) -> dict[str, Any]:
    """JSON schema of 1..max_edits edits of `parent`; no edit can keep a field's current value."""
    return {"$schema": JSON_SCHEMA, "title": "Edits of the parent MixerSpec",
            **_edits_array(parent, max_edits, allow_quadratic)}


def proposal_schema(parent: MixerSpec, *, max_edits: int = 3, allow_quadratic: bool = False,
                    min_motivation: int = 40, max_motivation: int = 800) -> dict[str, Any]:
    """JSON schema of a spec-mode proposal: {"motivation": ..., "edits": [...]}.

    The root is an object (some servers accept no other root), and the motivation comes first
    so that a model states its reason before it chooses the edits.
    """
    motivation = {"type": "string", "minLength": min_motivation, "maxLength": max_motivation,
                  "description": "Why these edits should improve the parent: the mechanism and "
                                 "the expected effect, in one or two sentences."}
    return {"$schema": JSON_SCHEMA, "title": "Spec-mode proposal", "type": "object",
            "properties": {"motivation": motivation,
                           "edits": _edits_array(parent, max_edits, allow_quadratic)},
            "required": ["motivation", "edits"], "additionalProperties": False}


def _edits_array(parent: MixerSpec, max_edits: int, allow_quadratic: bool) -> dict[str, Any]:
    if max_edits < 1:
        raise ValueError(f"max_edits={max_edits} must be >= 1")
    items = []
    for name in FIELDS:
        choices = allowed_values(parent, name, allow_quadratic=allow_quadratic)
        if choices:
            items.append({"type": "object",
                          "properties": {"field": {"const": name},
                                         "value": field_schema(name, choices)},
                          "required": ["field", "value"], "additionalProperties": False})
    return {"type": "array", "minItems": 1, "maxItems": max_edits, "items": {"anyOf": items}}


def parse_edits(parent: MixerSpec, edits: Any, *, allow_quadratic: bool = False) -> list[Edit]:
    """Check `edits` (Edit objects or {"field", "value"} mappings) against `parent`."""
    if isinstance(edits, (str, bytes)) or not isinstance(edits, Sequence) or not edits:
        raise EditError('edits must be a non-empty list of {"field": ..., "value": ...} objects; '
                        f"got {_short(edits)}")
    errors: list[str] = []
    parsed: list[Edit] = []
    seen: set[str] = set()
    for i, item in enumerate(edits, 1):
        if isinstance(item, Edit):
            item = item.to_dict()
        if not isinstance(item, Mapping) or set(item) != {"field", "value"}:
            errors.append(f'edit #{i} must be an object with exactly the keys "field" and '
                          f'"value"; got {_short(item)}')
            continue
        name, value = item["field"], item["value"]
        if name not in OPTIONS:
            errors.append(f"edit #{i}: unknown field {name!r}; valid fields: {', '.join(FIELDS)}")
            continue
        if name in seen:
            errors.append(f"edit #{i}: field {name!r} is edited twice")
            continue
        seen.add(name)
        allowed = allowed_values(parent, name, allow_quadratic=allow_quadratic)
        try:
            value = coerce_choice(name, value)
        except SpecError as exc:
            errors.append(f"edit #{i}: {exc}")
            continue
        if value == getattr(parent, name):
            errors.append(f"edit #{i}: {name} is already {show_value(value)} in the parent; an "
                          f"edit must change it to one of: {', '.join(map(show_value, allowed))}")
        elif value not in allowed:
            errors.append(f"edit #{i}: {name}={show_value(value)} is quadratic (softmax attention "
                          "fails the cost gate); choose one of: "
                          f"{', '.join(map(show_value, allowed))}")
        else:
            parsed.append(Edit(field=name, value=value))
    if errors:
        raise EditError("invalid edits:\n  " + "\n  ".join(errors))
    return parsed


def apply_edits(parent: MixerSpec, edits: Any, *, repair: bool = False,
                allow_quadratic: bool = False) -> MixerSpec:
    """The child of `parent` under `edits`; EditError if any edit is bad or nothing changes."""
    parsed = parse_edits(parent, edits, allow_quadratic=allow_quadratic)
    values = parent.to_dict() | {e.field: e.value for e in parsed}
    problems = spec_problems(values)
    if problems and repair:
        repaired = repair_values(values, keep={e.field for e in parsed})
        if repaired is not None:
            values, problems = repaired[0], []
    if problems:
        raise EditError("the edited spec breaks a rule:\n  "
                        + "\n  ".join(p.message for p in problems))
    child = MixerSpec(**values)
    if child == parent:
        inert = ", ".join(e.field for e in parsed)
        raise EditError(f"the edits change nothing: {inert} has no effect in this spec (e.g. "
                        "decay_param acts only with decay 'scalar' or 'channel', local_window "
                        "only with local_path 'window'); edit a field that is in use")
    return child


def describe_changes(parent: MixerSpec, child: MixerSpec, fields: Sequence[str] = FIELDS
                     ) -> list[str]:
    """One phrase per changed field among `fields`, quoting the new choice's note."""
    return [f"changed {name} from {show_value(getattr(parent, name))} to "
            f"{show_value(getattr(child, name))} ({OPTIONS[name][getattr(child, name)]})"
            for name in FIELDS if name in fields and getattr(parent, name) != getattr(child, name)]


def show_value(value: Value) -> str:
    """A choice as motivations write it: strings bare, numbers as JSON, None as "run's default"."""
    if value is None:
        return "the run's default"
    return value if isinstance(value, str) else json.dumps(value)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
