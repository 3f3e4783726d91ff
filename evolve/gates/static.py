"""The gates that read a mixer file without running it: parse, and imports/names.

    verdict, tree = parse_gate(source_bytes, path, cfg)
    verdict = imports_gate(tree, path, cfg)
    line = mixer_binding_line(tree)     # None: the file binds no top-level name `Mixer`

The import gate is an AST filter: it keeps an honest model from reaching files, processes and
native code by accident, and makes the error say which line to change. It is not a security
boundary (Python offers too many paths to the same object); the sandbox's process limits are.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass
from pathlib import Path

from evolve.gates.check import CheckConfig, Verdict
from evolve.model.config import ModelConfig

CONTRACT = ("the contract: `class Mixer(nn.Module)` with `__init__(self, cfg)` (cfg.hidden_size, "
            "cfg.num_heads, cfg.conv_size, cfg.chunk_size, cfg.max_seq_len) and `forward(self, "
            "x)` mapping x [B, T, D] to [B, T, D] of x's dtype")
MAX_LISTED = 20
ATTR_FUNCS = ("getattr", "setattr", "hasattr", "delattr")
# Dunder names a mixer may read: `if __name__ == "__main__"` and docstrings are harmless.
ALLOWED_DUNDER_NAMES = ("__name__", "__doc__")


@dataclass
class Context:
    """What the gates of one check share: the file, the settings, the tree, the loaded class."""

    path: Path
    source: bytes
    cfg: CheckConfig
    model: ModelConfig
    tree: ast.Module | None = None
    cls: type | None = None


def parse_gate(source: bytes, path: Path, cfg: CheckConfig) -> tuple[Verdict, ast.Module | None]:
    """Size limits, UTF-8, valid Python; returns the verdict and the tree when it parsed."""
    start = time.monotonic()
    name = path.name
    lines = source.count(b"\n") + (0 if source.endswith(b"\n") or not source else 1)
    measured = {"bytes": len(source), "lines": lines}

    def fail(message: str) -> tuple[Verdict, None]:
        return Verdict(gate="parse", passed=False, message=message, measured=measured,
                       elapsed_s=time.monotonic() - start), None

    if len(source) > cfg.max_file_bytes:
        return fail(f"{name} is {len(source):,} bytes; the limit is {cfg.max_file_bytes:,}: "
                    "write a shorter mixer")
    if lines > cfg.max_lines:
        return fail(f"{name} has {lines:,} lines; the limit is {cfg.max_lines:,}")
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = source[:exc.start].count(b"\n") + 1
        return fail(f"{name}:{line}: not UTF-8 (byte {source[exc.start]:#04x} at offset "
                    f"{exc.start}): save the file as UTF-8")
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        return fail(f"{name}:{line}: the file contains a NUL byte")
    try:
        tree = ast.parse(text, filename=name)
    except SyntaxError as exc:
        where = f"{name}:{exc.lineno}:{exc.offset}" if exc.lineno else name
        shown = ""
        if exc.text:
            code = exc.text.rstrip("\n")
            caret = " " * max((exc.offset or 1) - 1 - (len(code) - len(code.lstrip())), 0)
            shown = f"\n    {code.strip()}\n    {caret}^"
        return fail(f"{where}: {type(exc).__name__}: {exc.msg}{shown}")
    except (RecursionError, MemoryError, ValueError) as exc:
        return fail(f"{name}: the parser gave up: {type(exc).__name__}: {exc}")
    return Verdict(gate="parse", passed=True, measured=measured,
                   elapsed_s=time.monotonic() - start), tree


def module_allowed(module: str, allowed: tuple[str, ...]) -> bool:
    """`module` is listed, or a submodule of an entry written 'pkg.*'."""
    for entry in allowed:
        if entry.endswith(".*"):
            if module.startswith(entry[:-1]):
                return True
        elif module == entry:
            return True
    return False


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


class _Guard(ast.NodeVisitor):
    """Collects (line, message) for every forbidden import, name and attribute."""

    def __init__(self, cfg: CheckConfig) -> None:
        self.cfg = cfg
        self.forbidden_names = set(cfg.forbidden_names)
        self.forbidden_attrs = set(cfg.forbidden_attributes)
        self.module_aliases: set[str] = set()  # names bound to imported modules and objects
        self.approved_calls: set[int] = set()  # id() of getattr-like Name nodes already checked
        self.violations: list[tuple[int, str]] = []

    def add(self, node: ast.AST, message: str) -> None:
        self.violations.append((getattr(node, "lineno", 0), message))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not module_allowed(alias.name, self.cfg.allowed_imports):
                self.add(node, f"`import {alias.name}`: module '{alias.name}' is not allowed")
            self.module_aliases.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self.add(node, f"relative import `from {'.' * node.level}{module} import ...`: a "
                           "mixer is one file and imports only allowed modules by full name")
            return
        if not module_allowed(module, self.cfg.allowed_imports):
            self.add(node, f"`from {module} import ...`: module '{module}' is not allowed")
            return
        for alias in node.names:
            if alias.name == "*":
                self.add(node, f"`from {module} import *`: import the names you use explicitly")
                continue
            if alias.name.startswith("_") or alias.name in self.forbidden_attrs:
                self.add(node, f"`from {module} import {alias.name}`: '{alias.name}' is not "
                               "allowed")
            self.module_aliases.add(alias.asname or alias.name)

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name in ATTR_FUNCS:
            if id(node) not in self.approved_calls:
                self.add(node, f"'{name}' used as a value: call it directly with a literal "
                               "attribute name, e.g. getattr(self, 'proj')")
        elif name in self.forbidden_names:
            self.add(node, f"name '{name}' is not allowed (no files, code evaluation or "
                           "introspection in a mixer)")
        elif _is_dunder(name) and name not in ALLOWED_DUNDER_NAMES:
            self.add(node, f"dunder name '{name}' is not allowed")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if attr.startswith("__"):
            if not (attr == "__init__" and _is_base_init(node.value, self.module_aliases)):
                self.add(node, f"attribute '.{attr}' is not allowed (no dunder attributes: "
                               "they reach interpreter internals)")
        elif attr in self.forbidden_attrs:
            self.add(node, f"attribute '.{attr}' is not allowed (`{_dotted(node)}`)")
        elif attr.startswith("_") and _root_name(node) in self.module_aliases:
            self.add(node, f"private attribute `{_dotted(node)}` of an imported module is not "
                           "allowed")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ATTR_FUNCS:
            self.approved_calls.add(id(func))
            target = node.args[1] if len(node.args) > 1 else None
            literal = _literal_prefix(target)
            if literal is None:
                self.add(node, f"{func.id}() needs a literal attribute name (a string or an "
                               "f-string that starts with a letter), not a computed one")
            elif literal.startswith("_") or (isinstance(target, ast.Constant) and
                                             literal in self.forbidden_attrs):
                self.add(node, f"{func.id}(..., {literal!r}): attribute '{literal}' is not "
                               "allowed")
        self.generic_visit(node)


def _is_base_init(value: ast.AST, module_aliases: set[str]) -> bool:
    """`super().__init__` or `nn.Module.__init__`: the one dunder call a module needs."""
    if isinstance(value, ast.Call):
        return isinstance(value.func, ast.Name) and value.func.id == "super"
    return isinstance(value, ast.Attribute) and _root_name(value) in module_aliases


def _literal_prefix(node: ast.AST | None) -> str | None:
    """The attribute-name literal of a getattr-like call, or None if it is computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        # A name that starts with a literal letter cannot become a dunder, whatever follows.
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value \
                and not first.value.startswith("_"):
            return first.value
    return None


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # unparse of odd trees is best effort; the line number is enough
        return "..."


def imports_gate(tree: ast.Module, path: Path, cfg: CheckConfig) -> Verdict:
    """Only allowed modules; no forbidden names, dunder escapes or computed getattr."""
    start = time.monotonic()
    guard = _Guard(cfg)
    # A Call is visited before its children, so getattr(...) in call position is approved
    # before its Name node is seen.
    guard.visit(tree)
    violations = sorted(set(guard.violations))
    measured = {"violations": len(violations)}
    if not violations:
        return Verdict(gate="imports", passed=True, measured=measured,
                       elapsed_s=time.monotonic() - start)
    shown = [f"{path.name}:{line}: {msg}" for line, msg in violations[:MAX_LISTED]]
    if len(violations) > MAX_LISTED:
        shown.append(f"... and {len(violations) - MAX_LISTED} more")
    allowed = ", ".join(cfg.allowed_imports)
    return Verdict(gate="imports", passed=False, measured=measured, elapsed_s=time.monotonic()
                   - start, message="\n".join(shown) + f"\nallowed modules: {allowed}")


def mixer_binding_line(tree: ast.Module) -> int | None:
    """Line where the module binds the top-level name `Mixer` (class, assignment or import)."""
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef) and stmt.name == "Mixer":
            return stmt.lineno
        targets: list[ast.AST] = []
        if isinstance(stmt, ast.Assign):
            targets = list(stmt.targets)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name) == "Mixer" for a in stmt.names):
                return stmt.lineno
        for target in targets:
            if any(isinstance(n, ast.Name) and n.id == "Mixer" for n in ast.walk(target)):
                return stmt.lineno
    return None


def class_names(tree: ast.Module) -> list[str]:
    """Top-level class names (named in the message when `Mixer` is missing)."""
    return [s.name for s in tree.body if isinstance(s, ast.ClassDef)]


def interface_precheck(ctx: Context) -> Verdict | None:
    """Fail the interface gate without starting torch when the file binds no top-level `Mixer`."""
    if ctx.tree is None or mixer_binding_line(ctx.tree) is not None:
        return None
    classes = class_names(ctx.tree)
    found = f"it defines the classes {', '.join(classes)}" if classes else "it defines no class"
    return Verdict(gate="interface", passed=False, message=(
        f"{ctx.path.name} defines no top-level name `Mixer` ({found}); {CONTRACT}"))
