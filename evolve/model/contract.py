"""The candidate contract: what a mixer file must define, and how one is loaded.

A mixer file defines ``class Mixer(nn.Module)`` with ``__init__(self, cfg: MixerConfig)`` and
``forward(x)`` mapping ``[B, T, D]`` to ``[B, T, D]``. It may import torch, einops, math and
``evolve.kernels`` (the import gate in ``evolve.gates.check`` enforces that; this module only loads).

    cls = load_mixer_class("deltanet")                 # a baseline, by name
    cls = load_mixer_class("state/run/candidates/c000042/mixer.py")
    mixer = cls(MixerConfig(hidden_size=64, num_heads=2))
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from evolve import EvolveError

BASELINES_DIR = Path(__file__).parent / "baselines"
BASELINE_NAMES = ("linear_attention", "deltanet", "gated_deltanet", "gla", "mamba2", "kda",
                  "gated_deltaproduct", "rwkv7", "softmax")


class MixerLoadError(EvolveError, ValueError):
    """A mixer file could not be loaded; the message names the file, the line and the cause."""


@dataclass(kw_only=True)
class MixerConfig:
    """What the backbone tells every mixer about the layer it sits in."""

    hidden_size: int = 64
    """Model width D: the mixer maps [B, T, D] to [B, T, D]."""
    num_heads: int = 2
    """Number of heads; hidden_size must be divisible by it."""
    conv_size: int = 4
    """Kernel width of the causal short convolution on q/k/v (0 disables it)."""
    chunk_size: int = 64
    """Chunk length for chunked kernels; inputs of any length must work."""
    max_seq_len: int = 2048
    """Longest sequence the model is trained on (for position tables, if a mixer needs one)."""
    layer_idx: int = 0
    """Index of this layer in the stack (0-based)."""
    num_layers: int = 2
    """Number of layers in the stack."""

    def __post_init__(self) -> None:
        if self.hidden_size <= 0 or self.num_heads <= 0:
            raise ValueError(f"hidden_size={self.hidden_size} and num_heads={self.num_heads} "
                             "must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}")
        if self.conv_size < 0:
            raise ValueError(f"conv_size={self.conv_size} must be >= 0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def resolve_mixer_path(name_or_path: str | Path) -> Path:
    """A baseline name or a path to a mixer file -> the file's path."""
    text = str(name_or_path)
    if text in BASELINE_NAMES:
        return BASELINES_DIR / f"{text}.py"
    path = Path(text)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise MixerLoadError(f"mixer file not found: {path}")
        return path
    raise MixerLoadError(f"unknown mixer {text!r}: give a file path ending in .py or one of the "
                         f"baselines: {', '.join(BASELINE_NAMES)}")


def _line_in(exc: BaseException, path: Path) -> int | None:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return exc.lineno
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return frames[-1].lineno if frames else None


def load_mixer_class(name_or_path: str | Path) -> type:
    """Import a mixer file under a name derived from its content and return its `Mixer`."""
    import torch.nn as nn

    path = resolve_mixer_path(name_or_path).resolve()
    source = path.read_bytes()
    # A content hash in the module name keeps two candidates (or two versions of one file)
    # from sharing a cached module in one process.
    module_name = f"evolve_mixer_{path.stem}_{hashlib.sha1(source).hexdigest()[:12]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the file is untrusted: report any failure with its line
            line = _line_in(exc, path)
            where = f"{path}:{line}" if line else str(path)
            raise MixerLoadError(f"{where}: the mixer file does not import: "
                                 f"{type(exc).__name__}: {exc}") from exc
        sys.modules[module_name] = module
    cls = getattr(module, "Mixer", None)
    if cls is None:
        raise MixerLoadError(f"{path}: defines no class named 'Mixer' (the contract: "
                             "class Mixer(nn.Module) with __init__(cfg) and forward(x))")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise MixerLoadError(f"{path}: 'Mixer' must be a subclass of torch.nn.Module")
    return cls


def build_mixer(cls: type, cfg: MixerConfig, source: str = "mixer"):
    """Instantiate `cls(cfg)`, turning any failure into a MixerLoadError with its line."""
    try:
        return cls(cfg)
    except Exception as exc:
        path = Path(getattr(sys.modules.get(cls.__module__), "__file__", "") or source)
        line = _line_in(exc, path.resolve()) if path.exists() else None
        where = f"{path}:{line}" if line else str(path)
        raise MixerLoadError(f"{where}: Mixer(cfg) failed: {type(exc).__name__}: {exc}") from exc
