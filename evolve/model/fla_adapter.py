"""Designs from outside: a layer written against fla's layer interface, made into a candidate.

fla's layers (and ASI-Arch's 106 designs, written the same way) are classes whose
`__init__` takes fla's keywords (hidden_size, num_heads, expand_k, expand_v, use_short_conv,
conv_size, layer_idx, ...) and whose `forward(hidden_states, attention_mask=None,
past_key_values=None, use_cache=False, **kw)` returns `(o, attn_weights, past_key_values)`.

    adapted = adapt(Path("my_layer.py").read_text(), "my_layer.py")
    adapted.code          # a mixer file: the layer, its imports rewritten, and a `Mixer`
    adapted.layer         # the class it wraps, e.g. "DeltaNet"
    adapted.notes         # every rewrite, one line each

What the adapter changes, and nothing else (the design then meets the gates as written):
- imports of fla.modules, fla.modules.l2norm, fla.layers.utils and fla.ops.* become their
  equivalents in evolve.kernels.modules (same signatures, run on evolve's kernel dispatcher);
  type-only imports (fla.models.utils.Cache, transformers' Unpack) come from typing;
- `@torch.compile` decorators are commented out (eager runs everywhere; the gates forbid
  torch.compile, which on CPU would compile for minutes);
- a `class Mixer` is appended: it builds the layer from the backbone's MixerConfig and returns
  the first element of the layer's output (fla's models also drop the other two).
Rewritten lines keep their line numbers, so a gate's `mixer.py:LINE` is the same line of the
original file. A file that already meets evolve's own contract (it binds `Mixer` and has no
fla-style layer) is returned unchanged.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from evolve import EvolveError

MODULES = "evolve.kernels.modules"
_OPS = {"delta_rule": ("chunk_delta_rule", "fused_chunk_delta_rule", "fused_recurrent_delta_rule"),
        "gated_delta_rule": ("chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"),
        "gla": ("chunk_gla", "fused_chunk_gla", "fused_recurrent_gla"),
        "simple_gla": ("chunk_simple_gla", "fused_chunk_simple_gla",
                       "fused_recurrent_simple_gla"),
        "linear_attn": ("chunk_linear_attn", "fused_chunk_linear_attn",
                        "fused_recurrent_linear_attn")}
IMPORT_MAP: dict[tuple[str, str], tuple[str, str]] = {
    ("fla.modules", "RMSNorm"): (MODULES, "FlaRMSNorm"),
    ("fla.modules", "FusedRMSNormGated"): (MODULES, "FusedRMSNormGated"),
    ("fla.modules", "FusedRMSNormSwishGate"): (MODULES, "FusedRMSNormGated"),
    ("fla.modules", "ShortConvolution"): (MODULES, "FlaShortConvolution"),
    ("fla.modules.l2norm", "l2norm"): (MODULES, "l2norm"),
    ("fla.modules.l2norm", "l2_norm"): (MODULES, "l2norm"),
    ("fla.layers.utils", "get_unpad_data"): (MODULES, "get_unpad_data"),
    ("fla.layers.utils", "index_first_axis"): (MODULES, "index_first_axis"),
    ("fla.layers.utils", "pad_input"): (MODULES, "pad_input"),
    ("fla.models.utils", "Cache"): ("typing", "Any"),
    ("transformers.processing_utils", "Unpack"): ("typing", "Unpack"),
    **{(module, name): (MODULES, f"fla_{op}") for op, names in _OPS.items() for name in names
       for module in ("fla.ops", f"fla.ops.{op}")},
}
"""(module, name) imported by an fla-style layer -> (module, name) it is taken from instead."""
REWRITTEN_ROOTS = ("fla", "transformers.processing_utils")
"""Imports from these modules must all be in IMPORT_MAP (others are left to the import gate)."""
LAYER_KWARGS = {"hidden_size": "cfg.hidden_size", "num_heads": "cfg.num_heads",
                "use_short_conv": "cfg.conv_size > 0", "conv_size": "cfg.conv_size or 4",
                "layer_idx": "cfg.layer_idx"}
"""fla's constructor keywords the wrapper fills from MixerConfig (when the layer takes them);
every other keyword (expand_k, expand_v, ...) keeps the layer's own default."""
EXPECTED = ("an fla-style layer: a top-level nn.Module class whose __init__ takes fla's keywords "
            "(hidden_size, num_heads, ...) and whose forward(hidden_states, attention_mask=None, "
            "past_key_values=None, use_cache=False, **kw) returns (o, attn_weights, "
            "past_key_values)")


class NotAnFlaLayer(EvolveError, ValueError):
    """The file is neither an fla-style layer nor an evolve mixer; the message says what was
    expected and what the file holds."""


class AdaptError(EvolveError, ValueError):
    """The file is an fla-style layer, but uses something of fla evolve has no equivalent for."""


@dataclass(kw_only=True)
class Adapted:
    """A mixer file made from an fla-style layer (or a native mixer passed through)."""

    code: str
    """The candidate file: meets evolve's contract (`class Mixer`), ready for the gates."""
    layer: str | None
    """The fla-style class wrapped by `Mixer`; None for a native mixer passed through."""
    notes: list[str] = field(default_factory=list)
    """What the adapter rewrote, one line each ('line 12: from fla.modules import ...')."""

    @property
    def native(self) -> bool:
        return self.layer is None


def _params(fn: ast.FunctionDef) -> tuple[list[str], bool]:
    """Names of `fn`'s parameters (positional and keyword) and whether it takes **kwargs."""
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    return names, a.kwarg is not None


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((s for s in cls.body if isinstance(s, ast.FunctionDef) and s.name == name), None)


def is_layer_class(cls: ast.ClassDef) -> bool:
    """fla's layer interface: forward takes attention_mask or past_key_values (a helper module's
    forward(hidden_states) does not), and __init__ takes hidden_size (or **kwargs)."""
    forward, init = _method(cls, "forward"), _method(cls, "__init__")
    if forward is None or init is None:
        return False
    fwd_names, _ = _params(forward)
    init_names, init_kw = _params(init)
    return bool({"attention_mask", "past_key_values"} & set(fwd_names[1:])) and \
        ("hidden_size" in init_names or init_kw)


def _parse(source: str, filename: str) -> ast.Module:
    try:
        return ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise NotAnFlaLayer(f"{filename}:{exc.lineno}: not valid Python ({exc.msg}); expected "
                            f"{EXPECTED}") from None


def find_layer(tree: ast.Module, filename: str, name: str | None = None) -> ast.ClassDef:
    """The layer class: `name`, or the one top-level class with fla's layer interface."""
    classes = [s for s in tree.body if isinstance(s, ast.ClassDef)]
    layers = [c for c in classes if is_layer_class(c)]
    if name is not None:
        found = next((c for c in classes if c.name == name), None)
        if found is None or found not in layers:
            what = "is not defined" if found is None else "does not have fla's layer interface"
            raise NotAnFlaLayer(f"{filename}: class {name!r} {what}; layers found: "
                                f"{', '.join(c.name for c in layers) or 'none'}; expected "
                                f"{EXPECTED}")
        return found
    if len(layers) == 1:
        return layers[0]
    if layers:
        raise NotAnFlaLayer(f"{filename}: {len(layers)} classes have fla's layer interface "
                            f"({', '.join(c.name for c in layers)}); name the one to import "
                            "(evolve import --layer CLASS; `layer:` in a seed design)")
    held = f"its classes: {', '.join(c.name for c in classes)}" if classes else "no class"
    raise NotAnFlaLayer(f"{filename}: no fla-style layer ({held}); expected {EXPECTED}, or an "
                        "evolve mixer (class Mixer with __init__(cfg) and forward(x))")


def is_fla_layer(source: str) -> bool:
    """Whether `source` parses and defines exactly one fla-style layer (code mode asks this)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return sum(isinstance(s, ast.ClassDef) and is_layer_class(s) for s in tree.body) == 1


def adapt(source: str, filename: str = "layer.py", layer: str | None = None) -> Adapted:
    """The candidate file for `source`: an fla-style layer wrapped as `Mixer`, or a native
    mixer unchanged. NotAnFlaLayer when it is neither; AdaptError for an fla import evolve lacks."""
    tree = _parse(source, filename)
    binds_mixer = any(isinstance(s, ast.ClassDef) and s.name == "Mixer" for s in tree.body)
    if layer is None and binds_mixer and not any(
            isinstance(s, ast.ClassDef) and is_layer_class(s) for s in tree.body):
        return Adapted(code=source, layer=None, notes=["native evolve mixer: unchanged"])
    cls = find_layer(tree, filename, layer)
    if binds_mixer:
        raise AdaptError(f"{filename}: defines a class named 'Mixer' besides the layer "
                         f"{cls.name!r}; rename it (the adapter adds the Mixer wrapper)")
    code, notes = rewrite(source, tree, filename)
    return Adapted(code=code + wrapper(cls, tree), layer=cls.name, notes=notes)


def wrapper(cls: ast.ClassDef, tree: ast.Module) -> str:
    """The `Mixer` class around layer `cls`, built from the backbone's MixerConfig."""
    init = _method(cls, "__init__")
    assert init is not None
    names, takes_kwargs = _params(init)
    kwargs = "".join(f"\n            {k}={v}," for k, v in LAYER_KWARGS.items()
                     if k in names or takes_kwargs)
    has_nn = any(isinstance(s, ast.Import) and any(a.name == "torch.nn" and a.asname == "nn"
                                                   for a in s.names) for s in tree.body)
    nn_import = "" if has_nn else "import torch.nn as nn\n"
    return f'''

{nn_import}
class Mixer(nn.Module):
    """evolve's contract around the fla-style layer {cls.name} (added by evolve's fla adapter):
    built from the backbone's MixerConfig; forward(x) is the layer's output o, [B, T, D]."""

    def __init__(self, cfg):
        super().__init__()
        self.layer = {cls.name}({kwargs}
        )

    def forward(self, x):  # x: [B, T, D]
        out = self.layer(x)  # fla's layers return (o, attn_weights, past_key_values)
        return out[0] if isinstance(out, tuple) else out
'''


def _rewritten(module: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in REWRITTEN_ROOTS)


def _is_torch_compile(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return isinstance(target, ast.Attribute) and target.attr == "compile" and \
        isinstance(target.value, ast.Name) and target.value.id == "torch"


def _import_statement(node: ast.ImportFrom, filename: str) -> str:
    """`from fla... import A, B as C` -> the same names from their evolve equivalents."""
    module = node.module or ""
    by_module: dict[str, list[str]] = {}
    for alias in node.names:
        target = IMPORT_MAP.get((module, alias.name))
        if target is None:
            known = sorted(n for m, n in IMPORT_MAP if m == module)
            raise AdaptError(f"{filename}:{node.lineno}: `from {module} import {alias.name}`: "
                             f"evolve has no equivalent of {module}.{alias.name}; supported"
                             f"{' from ' + module if known else ''}: "
                             f"{', '.join(known) or ', '.join(sorted({m for m, _ in IMPORT_MAP}))}")
        local = alias.asname or alias.name
        by_module.setdefault(target[0], []).append(
            target[1] if target[1] == local else f"{target[1]} as {local}")
    return "; ".join(f"from {m} import {', '.join(names)}" for m, names in by_module.items())


def _replace_statement(lines: list[str], node: ast.stmt, new: str, note: str) -> None:
    """Put `new` where statement `node` was, keeping the line count (lines are 0-based)."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    prefix, suffix = lines[first][:node.col_offset], lines[last][node.end_col_offset or 0:]
    ending = "\n" if suffix.endswith("\n") else ""
    lines[first] = f"{prefix}{new}{suffix.rstrip(chr(10))}  # {note}{ending}"
    for i in range(first + 1, last + 1):
        lines[i] = "\n"


def rewrite(source: str, tree: ast.Module, filename: str) -> tuple[str, list[str]]:
    """`source` with fla's imports mapped and torch.compile decorators commented out."""
    lines = source.splitlines(keepends=True)
    notes: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and _rewritten(node.module or ""):
            was = ast.unparse(node)
            _replace_statement(lines, node, _import_statement(node, filename),
                               f"evolve fla adapter; was: {was}")
            notes.append(f"line {node.lineno}: {was}")
        elif isinstance(node, ast.Import) and any(_rewritten(a.name) for a in node.names):
            raise AdaptError(f"{filename}:{node.lineno}: `{ast.unparse(node)}`: import the names "
                             f"used with `from <module> import <name>` (the adapter maps "
                             f"names: {', '.join(sorted({m for m, _ in IMPORT_MAP}))})")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for dec in node.decorator_list:
                if not _is_torch_compile(dec):
                    continue
                for i in range(dec.lineno - 1, dec.end_lineno or dec.lineno):
                    text = lines[i]
                    indent = text[:len(text) - len(text.lstrip())]
                    lines[i] = f"{indent}# {text.strip()}  (evolve fla adapter: runs eager)\n"
                notes.append(f"line {dec.lineno}: @{ast.unparse(dec)} removed")
    code = "".join(lines)
    notes.sort(key=lambda note: int(note.split(":")[0].split()[1]))
    return code if code.endswith("\n") else code + "\n", notes
