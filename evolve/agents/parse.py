"""Tolerant parsing of model answers: JSON and Python code out of whatever the model wrote.

    found = extract_json(text)      # found.value, or found.error ("truncated JSON ...")
    code = extract_code(text)       # code.code + code.motivation, or code.error

Models wrap JSON in prose or code fences, stop mid-object when they run out of tokens, answer
with prose only, or write C++ when asked for Python. Each case yields a precise error that the
role records and, within its attempts, quotes back to the model. Nothing here executes, imports
or writes what the model wrote.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

# An opening fence with an optional info string, the body, and the closing fence (or the end).
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
_PYTHON_TAGS = {"python", "py", "python3", "py3", ""}
_JSON_TAGS = {"json", "jsonc", "json5", ""}
# Tell-tale lines of other languages, for an error that says what was written instead.
_OTHER_LANGUAGES = (
    ("C/C++", re.compile(r"^\s*#include\s*[<\"]|\bstd::|^\s*(int|void)\s+main\s*\(", re.M)),
    ("JavaScript/TypeScript", re.compile(r"^\s*(const|let|var)\s+\w+\s*=|=>\s*\{|"
                                         r"^\s*function\s+\w+\s*\(", re.M)),
    ("Rust", re.compile(r"^\s*(fn|impl|use)\s+\w+.*(\{|::|;)\s*$", re.M)),
    ("Java/C#", re.compile(r"^\s*(public|private)\s+(static\s+)?(class|void|int)\b", re.M)),
)
_MAX_SCAN = 64  # '{' positions tried when looking for JSON inside prose (bounded for huge text)


@dataclass(frozen=True, kw_only=True)
class JsonFound:
    """The first JSON object found in an answer, or why there is none."""

    value: Any = None
    """The decoded object (a dict unless `expect_object` was False)."""
    error: str = ""
    """Empty on success; else 'empty answer', 'truncated JSON ...', 'no JSON object ...'."""
    how: str = ""
    """'direct', 'fenced' or 'embedded' on success."""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True, kw_only=True)
class CodeFound:
    """A Python file found in an answer, the prose around it, or why there is none."""

    code: str = ""
    motivation: str = ""
    """The answer's prose outside the code (a 'Motivation:' line when there is one)."""
    error: str = ""
    """Empty on success; else prose without code, truncated, wrong language, syntax error."""

    @property
    def ok(self) -> bool:
        return not self.error


def extract_json(text: str, *, expect_object: bool = True) -> JsonFound:
    """The JSON value of `text`: whole, in a fenced block, or embedded in prose."""
    stripped = text.strip()
    if not stripped:
        return JsonFound(error="empty answer")
    value = _loads(stripped)
    if value is not _NOTHING and (isinstance(value, dict) or not expect_object):
        return JsonFound(value=value, how="direct")
    for tag, body in fenced_blocks(stripped):
        if tag.lower() in _JSON_TAGS:
            value = _loads(body.strip())
            if value is not _NOTHING and (isinstance(value, dict) or not expect_object):
                return JsonFound(value=value, how="fenced")
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"\{", stripped)][:_MAX_SCAN]
    for start in starts:
        try:
            value, _ = decoder.raw_decode(stripped, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            return JsonFound(value=value, how="embedded")
    if starts and unclosed_json(stripped[starts[0]:]):
        return JsonFound(error=f"truncated JSON: the answer ({len(text):,} characters) ends "
                               "inside an unfinished object; it was probably cut at the token "
                               "limit")
    if starts:
        return JsonFound(error="no valid JSON object in the answer (braces found, but they do "
                               f"not parse): {preview(stripped)}")
    return JsonFound(error=f"no JSON object in the answer (prose only): {preview(stripped)}")


def unclosed_json(text: str) -> bool:
    """True if `text` opens more braces/brackets (outside strings) than it closes, or ends in a
    string: the signature of an answer cut at the token limit."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return in_string or depth > 0


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of each ``` fenced block; an unclosed last block runs to the end."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(text)]


def extract_code(text: str, *, require: str = "Mixer") -> CodeFound:
    """The largest Python block of `text` that parses and binds `require` at top level."""
    stripped = text.strip()
    if not stripped:
        return CodeFound(error="empty answer")
    blocks = fenced_blocks(stripped)
    prose = _FENCE.sub(" ", stripped)
    motivation = _motivation(prose)
    if not blocks:
        if _parses(stripped) and re.search(r"^class\s", stripped, re.M):
            return _checked(stripped, motivation, require)  # raw code without a fence
        language = guess_language(stripped)
        if language:
            return CodeFound(motivation=motivation,
                             error=f"code in the wrong language ({language}); write Python")
        return CodeFound(motivation=motivation, error="prose without code: the answer has no "
                         f"```python block: {preview(stripped)}")
    python = [body for tag, body in blocks if tag.lower() in _PYTHON_TAGS]
    if not python:
        tags = ", ".join(sorted({tag for tag, _ in blocks}))
        return CodeFound(motivation=motivation, error=f"code in the wrong language ({tags}); "
                         "write the mixer in Python, in a ```python block")
    closed = stripped.count("```") % 2 == 0
    parsing = [b for b in python if _parses(b)]
    if not parsing:
        body = max(python, key=len)
        if not closed:
            return CodeFound(motivation=motivation, error="truncated code: the ```python block "
                             "never closes and does not parse; it was probably cut at the "
                             "token limit")
        language = guess_language(body)
        if language:
            return CodeFound(motivation=motivation,
                             error=f"code in the wrong language ({language}); write Python")
        return CodeFound(motivation=motivation, error=f"the code does not parse as Python: "
                         f"{syntax_error(body)}")
    return _checked(max(parsing, key=len), motivation, require)


def _checked(code: str, motivation: str, require: str) -> CodeFound:
    tree = ast.parse(code)
    names = {s.name for s in tree.body if isinstance(s, ast.ClassDef)}
    names |= {t.id for s in tree.body if isinstance(s, ast.Assign) for t in s.targets
              if isinstance(t, ast.Name)}
    if require == "Mixer" and require not in names:
        from evolve.model.fla_adapter import adapt, is_fla_layer

        if is_fla_layer(code):  # a layer written for fla's interface: wrapped as a Mixer
            try:
                return CodeFound(code=adapt(code, "answer.py").code, motivation=motivation)
            except ValueError as exc:  # an fla import evolve has no equivalent for
                return CodeFound(code=code, motivation=motivation, error=str(exc))
    if require and require not in names:
        found = ", ".join(sorted(names)) or "none"
        return CodeFound(code=code, motivation=motivation, error=f"the code defines no top-level "
                         f"`{require}` (top-level names: {found})")
    return CodeFound(code=code.rstrip() + "\n", motivation=motivation)


def guess_language(text: str) -> str | None:
    """The name of a non-Python language `text` looks like, if any."""
    for name, pattern in _OTHER_LANGUAGES:
        if pattern.search(text):
            return name
    return None


def syntax_error(code: str) -> str:
    """'line N: message' of the first syntax error of `code` (empty if it parses)."""
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    except ValueError as exc:  # e.g. null bytes
        return str(exc)
    return ""


def preview(text: str, limit: int = 160) -> str:
    """One line of at most `limit` characters, for error messages."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


def _motivation(prose: str) -> str:
    match = re.search(r"(?:^|\n)\s*\**motivation\**\s*:\**\s*(.+?)(?:\n\s*\n|\Z)", prose,
                      re.I | re.S)
    text = match.group(1) if match else prose
    return " ".join(text.split())[:2000]


def _parses(code: str) -> bool:
    return not syntax_error(code)


_NOTHING = object()


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _NOTHING


_TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool,
                          "number": (int, float), "integer": int, "null": type(None)}


def schema_errors(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What keeps `value` from matching `schema`, for the subset of JSON Schema that evolve's
    schemas use (type, enum, const, anyOf, properties, required, additionalProperties: false,
    min/maxLength, min/maxItems, items). Empty when it matches."""
    if "anyOf" in schema:
        options = [schema_errors(value, option, where) for option in schema["anyOf"]]
        if all(options):
            return [f"{where}: matches none of {len(options)} alternatives "
                    f"(closest: {min(options, key=len)[0]})"]
        return []
    if "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not {schema['const']!r}"]
    if "enum" in schema and not any(_same(value, c) for c in schema["enum"]):
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    kind = schema.get("type")
    if kind and not (isinstance(value, _TYPES[kind]) and
                     not (kind in ("number", "integer") and isinstance(value, bool))):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']} characters")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{where}: longer than {schema['maxLength']} characters")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"{where}: missing {key!r}" for key in schema.get("required", [])
                   if key not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected key {key!r}" for key in value if key not in properties]
        for key, sub in properties.items():
            if key in value:
                errors += schema_errors(value[key], sub, f"{where}.{key}")
    return errors


def _same(value: Any, choice: Any) -> bool:
    """JSON equality: 1 equals 1.0, but True is not 1 and "1" is not 1."""
    if isinstance(value, bool) or isinstance(choice, bool):
        return value is choice
    if isinstance(value, (int, float)) and isinstance(choice, (int, float)):
        return value == choice
    return type(value) is type(choice) and value == choice
