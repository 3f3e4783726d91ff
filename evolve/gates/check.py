"""The CHECK step: cheap, deterministic gates that a candidate mixer must pass before training.

    report = check_file("state/run/candidates/c000042/mixer.py", CheckConfig())
    print(format_report(report))
    write_report(report, "state/run/candidates/c000042")       # -> checks.json, atomically
    report = check_candidate("state/run/candidates/c000042", cfg)   # the two above in one call

Gates, in order (docs/GATES.md says what each proves and what it cannot):
parse -> imports -> interface -> smoke -> causality -> cost -> params. Every gate runs in a
sandboxed child process (`evolve.gates.sandbox`): the parent never parses or imports the candidate.
The leakage gate runs at training time: the trainer calls `leakage_verdict`.

This module is import-light (no torch): the CLI and the driver import it freely.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve import EvolveError
from evolve.model.config import ModelConfig
from evolve.state.layout import CandidatePaths

GATES = ("parse", "imports", "interface", "smoke", "causality", "cost", "params")
"""The gates run by `check_file`, in order."""
STATIC_GATES = ("parse", "imports")
"""Gates that read the file without executing it (they need no torch)."""
REQUIRES = {"parse": (), "imports": ("parse",), "interface": ("imports",),
            "smoke": ("interface",), "causality": ("smoke",), "cost": ("interface",),
            "params": ("interface",)}
"""The gates whose success each gate needs (used when the run goes on after a failure)."""
DTYPES = ("float32", "bfloat16", "float16")

DEFAULT_ALLOWED_IMPORTS = ("__future__", "torch", "torch.nn", "torch.nn.functional", "einops",
                           "math", "typing", "functools", "evolve.kernels", "evolve.kernels.*")
DEFAULT_FORBIDDEN_NAMES = ("open", "exec", "eval", "compile", "__import__", "globals", "locals",
                           "vars", "breakpoint", "input", "exit", "quit", "help", "memoryview")
# Module names that other allowed modules happen to expose as attributes (torch.os, torch.sys),
# torch's escape hatches into files, processes, compilers and native code, and the global
# switches that would change how the gates or other candidates run.
DEFAULT_FORBIDDEN_ATTRIBUTES = (
    "os", "sys", "subprocess", "socket", "ctypes", "pickle", "shutil", "importlib", "builtins",
    "io", "pathlib", "multiprocessing", "threading", "signal", "tempfile", "glob", "marshal",
    "gc", "inspect", "pty", "posix", "platform", "resource", "urllib", "http", "mmap", "fcntl",
    "types", "code", "codeop", "runpy", "sysconfig",
    "load", "save", "from_file", "load_library", "hub", "cpp_extension", "utils", "jit",
    "compile", "package", "library", "ops", "classes", "distributed", "get_type_hints",
    "ForwardRef", "system", "popen", "spawnv", "execv", "fork", "remove", "unlink", "rmtree",
    "mkdir", "write_text", "write_bytes", "tofile",
    "set_num_threads", "set_num_interop_threads", "set_default_dtype", "set_default_device",
    "set_default_tensor_type", "set_grad_enabled", "use_deterministic_algorithms",
)


@dataclass(kw_only=True)
class CheckConfig:
    """Settings of the CHECK gates and of the sandbox they run in."""

    allowed_imports: tuple[str, ...] = DEFAULT_ALLOWED_IMPORTS
    """Modules a mixer may import; 'pkg.*' allows every submodule of pkg."""
    forbidden_names: tuple[str, ...] = DEFAULT_FORBIDDEN_NAMES
    """Builtins a mixer may not name (getattr/setattr/hasattr/delattr are checked separately:
    allowed only with a literal attribute name that does not start with '_')."""
    forbidden_attributes: tuple[str, ...] = DEFAULT_FORBIDDEN_ATTRIBUTES
    """Attribute names a mixer may not use on any object (dunder attributes are always
    forbidden, and '_private' attributes of imported modules)."""
    max_file_bytes: int = 65_536
    """Largest mixer file accepted by the parse gate."""
    max_lines: int = 1500
    """Most lines a mixer file may have."""
    hidden_size: int = 64
    """Model width D of the mixer built by the interface, smoke, causality and cost gates."""
    num_heads: int = 2
    """Heads of that mixer."""
    conv_size: int = 4
    """Short-convolution width offered to that mixer."""
    chunk_size: int = 64
    """Chunk length offered to that mixer (the gates use lengths that are not multiples)."""
    interface_shapes: tuple[tuple[int, int], ...] = ((1, 67), (3, 130))
    """(batch, length) pairs the interface gate runs forward on, in every interface dtype."""
    interface_dtypes: tuple[str, ...] = ("float32", "bfloat16")
    """Dtypes the output must keep (shape [B, T, D] and the input's dtype)."""
    causality_lengths: tuple[int, ...] = (67, 150)
    """Sequence lengths of the causality gate; each crosses at least one chunk boundary."""
    causality_tolerance: float = 1e-4
    """Largest change of an output at positions <= t, relative to the output's scale, that
    perturbing inputs at positions > t may cause (float32 rounding of chunked kernels)."""
    cost_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    """Sequence lengths at which the cost gate measures time, FLOPs and saved activations."""
    cost_fit_points: int = 3
    """The exponent is fitted on the log-log points of this many largest lengths."""
    cost_exponent_bound: float = 1.3
    """Largest exponent of cost ~ T^a that passes (1: linear; softmax attention is 2)."""
    cost_repeats: int = 3
    """Timed forward+backward passes per length (the minimum CPU time is used)."""
    cost_max_step_s: float = 10.0
    """One forward+backward at the largest length slower than this fails: too slow to train."""
    param_tolerance: float = 0.02
    """The model with this mixer, MLP sized to the target, must be within this fraction of
    the model config's target_params."""
    max_mixer_fraction: float = 0.5
    """Largest share of target_params the mixers of all layers may take (the MLP keeps the
    rest, so a mixer cannot win by becoming the whole model)."""
    leakage_threshold: float = 0.10
    """At training time a loss this fraction below the baseline's stops the candidate."""
    memory_limit_mb: int = 3072
    """Address space the sandbox allows above what torch uses after import (RLIMIT_AS)."""
    cpu_limit_s: int = 300
    """CPU seconds the sandboxed child may use in all (RLIMIT_CPU)."""
    startup_timeout_s: float = 60.0
    """Wall-clock limit for the child to start and import torch."""
    gate_timeout_s: float = 60.0
    """Wall-clock limit of each gate but cost; the process group is killed past it."""
    cost_timeout_s: float = 120.0
    """Wall-clock limit of the cost gate."""
    sandbox_user: str = "nobody"
    """User the child switches to when started as root (so that RLIMIT_NPROC and file
    permissions apply); '' keeps root."""
    stop_at_first_failure: bool = True
    """Stop at the first failed gate (False: run every gate whose prerequisites passed)."""

    def __post_init__(self) -> None:
        # YAML gives lists; the fields are tuples (hashable, and the dataclass stays comparable).
        for name in ("allowed_imports", "forbidden_names", "forbidden_attributes",
                     "interface_dtypes", "causality_lengths", "cost_lengths"):
            setattr(self, name, tuple(getattr(self, name)))
        self.interface_shapes = tuple(tuple(s) for s in self.interface_shapes)  # type: ignore
        dotted = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\.\*)?$")
        for mod in self.allowed_imports:
            if not isinstance(mod, str) or not dotted.match(mod):
                raise ValueError(f"allowed_imports entry {mod!r} is not a module name "
                                 "(e.g. 'torch.nn' or 'evolve.kernels.*')")
        for name in ("max_file_bytes", "max_lines", "hidden_size", "num_heads", "chunk_size",
                     "cost_repeats", "memory_limit_mb", "cpu_limit_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}")
        for shape in self.interface_shapes:
            if len(shape) != 2 or min(shape) <= 0:
                raise ValueError(f"interface_shapes entry {shape!r} must be (batch, length) "
                                 "with both > 0")
        for dtype in self.interface_dtypes:
            if dtype not in DTYPES:
                raise ValueError(f"interface_dtypes entry {dtype!r} is not valid; choose from: "
                                 f"{', '.join(DTYPES)}")
        for name in ("causality_lengths", "cost_lengths"):
            lengths = getattr(self, name)
            if not lengths or min(lengths) < 2 or list(lengths) != sorted(set(lengths)):
                raise ValueError(f"{name}={lengths!r} must be increasing lengths >= 2")
        if not 2 <= self.cost_fit_points <= len(self.cost_lengths):
            raise ValueError(f"cost_fit_points={self.cost_fit_points} must be between 2 and "
                             f"len(cost_lengths)={len(self.cost_lengths)}")
        if not 1.0 < self.cost_exponent_bound < 2.0:
            raise ValueError(f"cost_exponent_bound={self.cost_exponent_bound} must be in (1, 2): "
                             "1 is linear, 2 is softmax attention")
        for name in ("causality_tolerance", "param_tolerance", "max_mixer_fraction",
                     "leakage_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be in (0, 1)")
        for name in ("cost_max_step_s", "startup_timeout_s", "gate_timeout_s", "cost_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0 seconds")

    def timeout_for(self, gate: str) -> float:
        """Wall-clock limit of one gate (or of 'startup')."""
        if gate == "startup":
            return self.startup_timeout_s
        return self.cost_timeout_s if gate == "cost" else self.gate_timeout_s


@dataclass(kw_only=True)
class Verdict:
    """One gate's outcome: what was measured, and on failure what to fix."""

    gate: str
    """Gate name (one of GATES, or 'leakage')."""
    passed: bool
    message: str = ""
    """Empty when passed; else precise enough to fix the code (line, shapes, figures)."""
    measured: dict[str, Any] = field(default_factory=dict)
    """The figures the verdict rests on (exponents, max differences, parameter counts)."""
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(gate=str(data["gate"]), passed=bool(data["passed"]),
                   message=str(data.get("message", "")), measured=dict(data.get("measured", {})),
                   elapsed_s=float(data.get("elapsed_s", 0.0)))


@dataclass(kw_only=True)
class CheckReport:
    """Every verdict of one check run, plus how the sandbox ran; saved as checks.json."""

    path: str
    verdicts: list[Verdict] = field(default_factory=list)
    sandbox: dict[str, Any] = field(default_factory=dict)
    """The limits and isolation layers the child applied, its exit status, its output tail."""
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every requested gate ran and passed."""
        return bool(self.verdicts) and all(v.passed for v in self.verdicts) and \
            not self.sandbox.get("incomplete")

    @property
    def failed_gate(self) -> str | None:
        """Name of the first failed gate, None when all passed."""
        return next((v.gate for v in self.verdicts if not v.passed), None)

    def verdict(self, gate: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.gate == gate), None)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "passed": self.passed, "failed_gate": self.failed_gate,
                "elapsed_s": round(self.elapsed_s, 3),
                "verdicts": [v.to_dict() for v in self.verdicts], "sandbox": self.sandbox}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckReport:
        return cls(path=str(data["path"]), sandbox=dict(data.get("sandbox", {})),
                   verdicts=[Verdict.from_dict(v) for v in data.get("verdicts", [])],
                   elapsed_s=float(data.get("elapsed_s", 0.0)))


def default_model_config() -> ModelConfig:
    """The backbone the parameter gate sizes against when none is given: the explore preset's."""
    from evolve.train.presets import explore

    lm = explore().lm
    assert lm is not None
    return lm.model


def check_file(path: str | Path, cfg: CheckConfig | None = None, *,
               model: ModelConfig | None = None,
               gates: tuple[str, ...] = GATES) -> CheckReport:
    """Run `gates` on the mixer file `path` in a sandboxed child process; write nothing.

    `model` is the backbone the parameter gate sizes the mixer in (it must set target_params);
    by default the explore preset's. `path` may also name a baseline ('deltanet').
    """
    from evolve.model.contract import resolve_mixer_path
    from evolve.gates.sandbox import run_sandboxed

    cfg = cfg or CheckConfig()
    model = model or default_model_config()
    if "params" in gates and model.target_params is None:
        raise ValueError("the params gate needs a model config with target_params set")
    unknown = [g for g in gates if g not in GATES]
    if unknown:
        raise ValueError(f"unknown gates {unknown}; valid gates: {', '.join(GATES)}")
    resolved = resolve_mixer_path(path).resolve()
    return run_sandboxed(resolved, cfg, model, tuple(g for g in GATES if g in gates))


def write_report(report: CheckReport, folder: str | Path) -> Path:
    """Save `report` as folder/checks.json (temp file in the folder, fsync, rename)."""
    from evolve.state.fsio import atomic_write_json

    target = CandidatePaths.of(folder).checks
    atomic_write_json(target, report.to_dict())
    return target


def read_report(folder: str | Path) -> CheckReport | None:
    """The report saved in folder/checks.json, None when there is none."""
    from evolve.state.fsio import read_json

    data = read_json(CandidatePaths.of(folder).checks, default=None)
    return None if data is None else CheckReport.from_dict(data)


def check_candidate(folder: str | Path, cfg: CheckConfig | None = None, *,
                    model: ModelConfig | None = None) -> CheckReport:
    """Check folder/mixer.py and save the verdicts to folder/checks.json."""
    report = check_file(CandidatePaths.of(folder).mixer, cfg, model=model)
    write_report(report, folder)
    return report


def leakage_verdict(candidate_loss: float, baseline_loss: float,
                    threshold: float = 0.10) -> Verdict:
    """The training-time leakage gate: a loss implausibly far below the baseline's fails.

    Call it with losses measured at the same step on the same data (e.g. validation
    bits-per-byte). A failure means: stop training, re-run the causality gate at the training
    length (check_file(path, replace(cfg, causality_lengths=(seq_len,)), gates=GATES[:5])),
    and record both verdicts in checks.json.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold={threshold!r} must be in (0, 1), e.g. 0.10 for 10%")
    if not baseline_loss > 0.0:
        raise ValueError(f"baseline_loss={baseline_loss!r} must be > 0")
    gap = (baseline_loss - candidate_loss) / baseline_loss
    measured = {"candidate_loss": candidate_loss, "baseline_loss": baseline_loss,
                "relative_gap": round(gap, 6), "threshold": threshold}
    if candidate_loss != candidate_loss:  # NaN compares unequal to itself
        return Verdict(gate="leakage", passed=False, measured=measured,
                       message="the candidate's loss is NaN: training diverged")
    if gap > threshold:
        return Verdict(gate="leakage", passed=False, measured=measured, message=(
            f"loss {candidate_loss:.4f} is {100 * gap:.1f}% below the baseline's "
            f"{baseline_loss:.4f} (threshold {100 * threshold:.0f}%): a mixer change does not "
            "buy that much; the mixer most likely sees future tokens. Training stopped; the "
            "causality gate is re-run at the training length"))
    return Verdict(gate="leakage", passed=True, measured=measured)


def format_report(report: CheckReport) -> str:
    """A table of the verdicts, then the full message of each failure."""
    lines = [f"{report.path}: {'PASSED' if report.passed else 'FAILED'} "
             f"({report.elapsed_s:.1f} s)"]
    for v in report.verdicts:
        figure = _headline(v)
        lines.append(f"  {v.gate:<10} {'pass' if v.passed else 'FAIL'}  {v.elapsed_s:6.2f} s"
                     f"{'  ' + figure if figure else ''}")
    for v in report.verdicts:
        if not v.passed:
            lines.append(f"\n[{v.gate}] {v.message}")
    if report.sandbox.get("incomplete"):
        lines.append(f"\n[sandbox] {report.sandbox['incomplete']}")
    seccomp = str(report.sandbox.get("layers", {}).get("seccomp", ""))
    if seccomp.startswith("off"):  # the other layers held, but the user should know
        lines.append(f"\n[sandbox] the seccomp layer is {seccomp}")
    return "\n".join(lines)


def _headline(v: Verdict) -> str:
    m = v.measured
    if v.gate == "cost":
        parts = [f"{label} T^{m[key]:.2f}" for key, label in (
            ("time_exponent", "time"), ("memory_exponent", "memory"), ("flops_exponent", "flops"))
            if m.get(key) is not None]
        return ", ".join(parts)
    if v.gate == "params" and "mixer_params" in m:
        return f"mixers {m['mixer_params']:,} params, model {m.get('total_params', 0):,}"
    if v.gate == "causality" and "max_leak" in m:
        return f"max leak {m['max_leak']:.2e}"
    return ""


def main_check(argv: list[str]) -> int:
    """`evolve check FILE [--json] [--write] [--keep-going] [--config YAML]`; 0 when all pass."""
    parser = argparse.ArgumentParser(prog="evolve check", description=(
        "Run the CHECK gates on a mixer file in a sandboxed child process."))
    parser.add_argument("file", help="mixer file (or a baseline name: "
                        "linear_attention, deltanet, gated_deltanet, gla, softmax)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--write", action="store_true",
                        help="save the report as checks.json next to the file")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every gate whose prerequisites passed, not only up to the "
                             "first failure")
    parser.add_argument("--config", help="YAML file with CheckConfig keys")
    parser.add_argument("--gates", help=f"comma-separated subset of: {','.join(GATES)}")
    args = parser.parse_args(argv)
    from evolve.config.loading import load_yaml
    from evolve.model.contract import BASELINE_NAMES

    cfg = load_yaml(CheckConfig, args.config) if args.config else CheckConfig()
    if args.keep_going:
        cfg = dataclasses.replace(cfg, stop_at_first_failure=False)
    if args.write and args.file in BASELINE_NAMES:
        parser.error(f"--write would write into the package's baselines folder; check "
                     f"{args.file!r} without --write")
    gates = tuple(args.gates.split(",")) if args.gates else GATES
    start = time.monotonic()
    report = check_file(args.file, cfg, gates=gates)
    report.elapsed_s = time.monotonic() - start
    if args.write:
        write_report(report, Path(report.path).parent)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_report(report))
    return 0 if report.passed else 1


class GateFailedError(EvolveError):
    """`evolve train` refused a mixer that fails a gate (exit status 1, as `evolve check`)."""


def check_before_training(mixer: str, model: ModelConfig, *, skip: bool = False
                          ) -> dict[str, Any]:
    """The gates `evolve train` runs before training `mixer` (a file or a baseline name) in
    `model`; returns what the result file records of them. Raises GateFailedError naming the
    failed gate, unless `skip` (`--no-check`), which is recorded instead."""
    from evolve.model.contract import BASELINE_NAMES

    if skip:
        return {"skipped": True, "reason": "--no-check"}
    if mixer in BASELINE_NAMES:
        return {"passed": True, "gates": "baseline"}
    report = check_file(mixer, model=model)
    if not report.passed:
        raise GateFailedError(format_report(report) + "\n\nevolve train: the mixer fails the "
                              f"{report.failed_gate} gate; not trained (--no-check trains it "
                              "anyway, recorded in the result file)")
    return {"passed": True, "failed_gate": None,
            "gates": [v.gate for v in report.verdicts]}


if __name__ == "__main__":
    raise SystemExit(main_check(sys.argv[1:]))
