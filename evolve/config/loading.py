"""Strict loading of nested dataclass configs from YAML, with file and line in every error.

Usage::

    cfg = load_yaml(RunConfig, "run.yaml")          # unknown keys fail, listing the valid ones
    cfg = from_dict(TrainConfig, {"seed": 1}, source="--set")
    text = dump_yaml(cfg)

A dataclass field may hold another dataclass, a `X | None` of one, lists and dicts of plain
values. Field docstrings (a string literal right under the field) are read by
`field_docs` so that `evolve config show` and the README can print what each key means.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from evolve import EvolveError

T = TypeVar("T")


class ConfigError(EvolveError, ValueError):
    """A config value or key is invalid; the message names the key, the source and the line."""


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key, out)


def _resolve_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass inside `X`, `X | None` or `Optional[X]`, else None."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


_SCALARS = (bool, int, float, str)


def _scalar_mismatch(value: Any, tp: Any) -> str | None:
    """The expected type's name when `value` cannot be a `tp` (a plain bool, int, float or str,
    possibly `| None`), else None. Other annotations are left to the dataclass."""
    allowed = [tp]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        allowed = list(typing.get_args(tp))
    if not all(t in _SCALARS or t is type(None) for t in allowed):
        return None
    for t in allowed:
        if t is type(None) and value is None:
            return None
        if t is bool and isinstance(value, bool):
            return None
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if t is str and isinstance(value, str):
            return None
    return " or ".join("null" if t is type(None) else t.__name__ for t in allowed)


def from_dict(
    cls: type[T],
    data: dict[str, Any] | None,
    *,
    source: str = "<dict>",
    lines: dict[str, int] | None = None,
    prefix: str = "",
) -> T:
    """Build dataclass `cls` from `data`; nested dicts become nested dataclasses.

    Keys absent from `data` keep their defaults, so a partial dict overrides a preset.
    """
    lines = lines or {}
    data = data or {}
    if not isinstance(data, dict):
        where = f"{source}:{lines.get(prefix, '?')}"
        raise ConfigError(f"{where}: '{prefix}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = _resolve_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            where = f"{source}:{lines[dotted]}" if dotted in lines else source
            raise ConfigError(
                f"{where}: unknown key '{dotted}' in {cls.__name__}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
        sub = _dataclass_in(hints[key])
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, source=source, lines=lines, prefix=dotted)
        elif sub is not None and value is not None and not isinstance(value, sub):
            # e.g. `launch: slurm`: a section is a mapping, never a shorthand word
            where = f"{source}:{lines[dotted]}" if dotted in lines else source
            keys = ", ".join(f.name for f in dataclasses.fields(sub))
            raise ConfigError(f"{where}: '{dotted}' is {value!r} ({type(value).__name__}); it "
                              f"must be a mapping of {sub.__name__} keys ({keys})")
        elif isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            value = tuple(value)
        expected = _scalar_mismatch(value, hints[key])
        if expected is not None and isinstance(value, str) \
                and _scalar_mismatch(1.0, hints[key]) is None:
            # YAML 1.1 reads 3e-3 (no dot) as a string; a float field takes it as the number.
            try:
                value, expected = float(value), None
            except ValueError:
                pass
        if expected is not None:
            where = f"{source}:{lines[dotted]}" if dotted in lines else source
            raise ConfigError(f"{where}: '{dotted}' is {value!r} ({type(value).__name__}); "
                              f"it must be {expected}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        line = lines.get(prefix)
        where = f"{source}:{line}" if line else source
        label = prefix or cls.__name__
        raise ConfigError(f"{where}: invalid '{label}': {exc}") from exc


def merge(base: T, overrides: dict[str, Any] | None, *, source: str = "<overrides>",
          lines: dict[str, int] | None = None) -> T:
    """Return `base` with the keys in `overrides` replaced, validated like a fresh load."""
    merged = deep_update(to_dict(base), overrides or {})
    # Validate keys against the schema first so the error points at the override's line.
    check_keys(type(base), overrides or {}, source, lines or {}, "")
    return from_dict(type(base), merged, source=source, lines=lines)


def check_keys(cls: type, data: dict[str, Any], source: str, lines: dict[str, int],
                prefix: str) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = _resolve_types(cls)
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            where = f"{source}:{lines[dotted]}" if dotted in lines else source
            raise ConfigError(
                f"{where}: unknown key '{dotted}' in {cls.__name__}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
        sub = _dataclass_in(hints[key])
        if sub is not None and isinstance(value, dict):
            check_keys(sub, value, source, lines, dotted)


def deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a YAML file into a dict plus a map from dotted key to line number."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start} is not UTF-8); a config is a YAML file") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        # An empty file is a mistake (a failed copy, the wrong file), not "all defaults": for a
        # run file it would start the full demo search.
        raise ConfigError(f"{path}: the file is empty; write `{{}}` in it to take every default")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of keys")
    lines: dict[str, int] = {}
    if node is not None:
        _key_lines(node, "", lines)
    return data, lines


def load_yaml(cls: type[T], path: str | Path) -> T:
    data, lines = read_yaml(path)
    return from_dict(cls, data, source=str(path), lines=lines)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML and JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def dump_yaml(cfg: Any, *, comments: bool = False) -> str:
    """`cfg` as YAML; with `comments`, each key under a `# ...` comment holding its field's
    docstring (nested sections too), as `evolve config show` prints it. Both load back alike."""
    if not comments:
        return yaml.safe_dump(to_dict(cfg), sort_keys=False)
    return "".join(_documented(type(cfg), to_dict(cfg), ""))


_COMMENT_WIDTH = 100


def _documented(cls: type, data: dict[str, Any], indent: str) -> list[str]:
    docs = field_docs(cls)
    hints = _resolve_types(cls)
    out: list[str] = []
    for key, value in data.items():
        doc = docs.get(key, "")
        if doc:
            width = max(_COMMENT_WIDTH - len(indent) - 2, 40)
            out += [f"{indent}# {line}\n" for line in textwrap.wrap(doc, width)]
        sub = _dataclass_in(hints[key])
        if sub is not None and isinstance(value, dict) and value:
            out.append(f"{indent}{key}:\n")
            out += _documented(sub, value, indent + "  ")
        else:
            text = yaml.safe_dump({key: value}, sort_keys=False)
            out += [f"{indent}{line}\n" for line in text.splitlines()]
    return out


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass `cls` (empty where there is none), fields
    inherited from a dataclass base included; each docstring's whitespace runs become one space."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            docs.update({k: v for k, v in _own_field_docs(klass).items()
                         if v or k not in docs})
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for stmt, nxt in zip(body, body[1:] + [None]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
            else:
                docs[stmt.target.id] = ""
    return docs


def choice(name: str, value: Any, valid: typing.Iterable[Any]) -> None:
    """Raise ConfigError unless `value` is one of `valid`."""
    valid = list(valid)
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: "
                          f"{', '.join(map(str, valid))}")


def positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value!r} must be {bound}")
