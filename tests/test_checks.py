"""The CHECK gates and their sandbox, against the hostile corpus in tests/fixtures/bad_mixers.

Each fixture file opens with `# expect: <first failing gate or 'pass'> | <regex the message
must match>`; files that also carry `# sandbox: <gate> | <regex>` are run a second time with
the static gates skipped, so that the process-level isolation alone must stop them.
The corpus runs once per session, two candidates at a time, each in its own folder; the
filesystem and the process table are compared before and after.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from evolve.state.layout import CandidatePaths
from evolve.gates.check import (
    GATES,
    CheckConfig,
    CheckReport,
    Verdict,
    check_candidate,
    check_file,
    default_model_config,
    format_report,
    leakage_verdict,
    main_check,
    read_report,
    write_report,
)
from evolve.config.loading import ConfigError, from_dict
from evolve.model.contract import BASELINE_NAMES
from evolve.gates.sandbox import run_sandboxed
from evolve.gates.static import imports_gate, parse_gate

FIXTURES = Path(__file__).parent / "fixtures" / "bad_mixers"
MARKER = "EVOLVE_PWNED"
# Gates of legitimate code take seconds; the endless loops of the corpus are killed at this.
TEST_CFG = CheckConfig(gate_timeout_s=10.0)
WORKERS = min(2, os.cpu_count() or 1)


def expectation(path: Path, key: str) -> tuple[str, str] | None:
    for line in path.read_bytes().decode("latin-1").splitlines():
        if line.startswith(f"# {key}: "):
            gate, _, regex = line.split(": ", 1)[1].partition(" | ")
            return gate.strip(), regex.strip()
    return None


CORPUS = sorted(FIXTURES.glob("*.py"))
SANDBOXED = [p for p in CORPUS if expectation(p, "sandbox")]


def test_corpus_is_large_and_annotated() -> None:
    bad = [p for p in CORPUS if expectation(p, "expect") and expectation(p, "expect")[0] != "pass"]
    assert len(bad) >= 50
    for path in CORPUS:
        exp = expectation(path, "expect")
        assert exp is not None, f"{path.name} has no '# expect:' header"
        assert exp[0] in (*GATES, "pass"), f"{path.name}: unknown gate {exp[0]!r}"
        re.compile(exp[1])
    # every gate has fixtures that must fail it
    assert {expectation(p, "expect")[0] for p in CORPUS} >= {*GATES, "pass"}


# ---------------------------------------------------------------- config, report, leakage


def test_config_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match=r"interface_dtypes entry 'float64' .*float32, bfloat16"):
        CheckConfig(interface_dtypes=("float64",))
    with pytest.raises(ValueError, match=r"cost_exponent_bound=2\.5"):
        CheckConfig(cost_exponent_bound=2.5)
    with pytest.raises(ValueError, match=r"cost_lengths=\(512, 256\) must be increasing"):
        CheckConfig(cost_lengths=(512, 256))
    with pytest.raises(ValueError, match=r"cost_fit_points=9"):
        CheckConfig(cost_fit_points=9)
    with pytest.raises(ValueError, match=r"leakage_threshold=1\.5"):
        CheckConfig(leakage_threshold=1.5)
    with pytest.raises(ValueError, match=r"allowed_imports entry 'os; rm'"):
        CheckConfig(allowed_imports=("os; rm",))


def test_a_run_file_value_of_the_wrong_type_is_named_with_its_line(tmp_path: Path) -> None:
    from evolve.search.run_config import load_run_config
    from evolve.config.loading import ConfigError

    path = tmp_path / "run.yaml"
    path.write_text("name: r\nsearch:\n  max_candidates: many\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:3: 'search\.max_candidates' is 'many' "
                                          r"\(str\); it must be int"):
        load_run_config(path)
    path.write_text("name: r\nsearch:\n  max_wall_hours: true\n")
    with pytest.raises(ConfigError, match=r"'search\.max_wall_hours' is True \(bool\); "
                                          r"it must be float or null"):
        load_run_config(path)
    path.write_text("name: r\nfitness:\n  mqar_pairs: 16\nsearch:\n  max_wall_hours: 2\n")
    assert load_run_config(path).search.max_wall_hours == 2  # an int where a float goes
    path.write_text("name: r\ntrain:\n  lm:\n    optim:\n      lr: 3e-3\n")
    assert load_run_config(path).train.lm.optim.lr == 0.003  # YAML 1.1 reads 3e-3 as a string


def test_config_loads_from_yaml_data_with_lists() -> None:
    cfg = from_dict(CheckConfig, {"interface_shapes": [[2, 33]], "cost_lengths": [128, 256, 512]})
    assert cfg.interface_shapes == ((2, 33),) and cfg.cost_lengths == (128, 256, 512)
    assert from_dict(CheckConfig, asdict(cfg)) == cfg
    with pytest.raises(ConfigError, match="valid keys: .*allowed_imports"):
        from_dict(CheckConfig, {"allowed_import": ["torch"]})


def test_leakage_verdict() -> None:
    ok = leakage_verdict(1.45, 1.5, 0.10)
    assert ok.passed and ok.gate == "leakage"
    bad = leakage_verdict(1.0, 1.5)
    assert not bad.passed and "33.3% below the baseline's 1.5000" in bad.message
    assert bad.measured["relative_gap"] == pytest.approx(1 / 3, abs=1e-5)
    assert not leakage_verdict(float("nan"), 1.5).passed
    with pytest.raises(ValueError, match="threshold=0"):
        leakage_verdict(1.0, 1.5, 0.0)
    with pytest.raises(ValueError, match="baseline_loss=0"):
        leakage_verdict(1.0, 0.0)


def test_report_roundtrip_and_atomic_write(tmp_path: Path) -> None:
    report = CheckReport(path=str(tmp_path / "mixer.py"), elapsed_s=1.0, verdicts=[
        Verdict(gate="parse", passed=True),
        Verdict(gate="imports", passed=False, message="mixer.py:3: `import os`")])
    target = write_report(report, tmp_path)
    assert target == CandidatePaths.of(tmp_path).checks
    assert sorted(os.listdir(tmp_path)) == [CandidatePaths.of(tmp_path).checks.name]  # no temp file left behind
    data = json.loads(target.read_text())
    assert data["passed"] is False and data["failed_gate"] == "imports"
    again = read_report(tmp_path)
    assert again is not None and again.to_dict() == report.to_dict()
    assert read_report(tmp_path / "nowhere") is None
    assert "imports    FAIL" in format_report(report) and "`import os`" in format_report(report)


def test_default_model_config_is_the_explore_preset() -> None:
    model = default_model_config()
    assert model.target_params == 20_000_000 and model.num_layers == 8


# ---------------------------------------------------------------- static gates


def _static(source: str, cfg: CheckConfig | None = None) -> Verdict:
    cfg = cfg or CheckConfig()
    verdict, tree = parse_gate(source.encode(), Path("mixer.py"), cfg)
    if tree is None:
        return verdict
    return imports_gate(tree, Path("mixer.py"), cfg)


def test_parse_limits() -> None:
    cfg = CheckConfig(max_file_bytes=100, max_lines=5)
    big = _static("x = 1\n" * 30, cfg)
    assert not big.passed and "180 bytes; the limit is 100" in big.message
    long = _static("x=1\n" * 6, cfg)
    assert not long.passed and "6 lines; the limit is 5" in long.message
    bad = _static("def f(:\n    pass\n")
    assert not bad.passed and bad.message.startswith("mixer.py:1:7: SyntaxError")


@pytest.mark.parametrize("source", [
    "from evolve.kernels.gla import chunk_gla",
    "import torch.nn.functional as F",
    "from __future__ import annotations",
    "class M:\n    def __init__(self):\n        super().__init__()",
    "import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n        nn.Module.__init__(self)",
    "y = getattr(self, 'proj')\nz = getattr(self, f'proj_{i}')\nsetattr(self, f'w{i}', 1)",
    "if __name__ == '__main__':\n    pass",
    "self._cache = None\nx = self._cache",
])
def test_import_gate_accepts(source: str) -> None:
    verdict = _static(source)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("source, message", [
    ("import evolve.kernelsx", "module 'evolve.kernelsx' is not allowed"),
    ("import evolve", "module 'evolve' is not allowed"),
    ("from torch.utils import checkpoint", "module 'torch.utils' is not allowed"),
    ("y = getattr(self, name)", "needs a literal attribute name"),
    ("y = getattr(self, f'{a}b')", "needs a literal attribute name"),
    ("y = getattr(self, '_private')", "attribute '_private' is not allowed"),
    ("import torch\ntorch._dynamo", "private attribute `torch._dynamo`"),
    ("x.__dict__", "attribute '.__dict__'"),
    ("m = torch.nn.Module.__subclasses__", "attribute '.__subclasses__'"),
])
def test_import_gate_rejects_naming_the_line(source: str, message: str) -> None:
    verdict = _static("import torch\n\n" + source)
    assert not verdict.passed
    assert message in verdict.message
    assert re.search(r"mixer\.py:[3-9]: ", verdict.message), verdict.message


def test_import_gate_allowlist_is_configurable() -> None:
    cfg = CheckConfig(allowed_imports=("torch", "numpy"))
    assert _static("import numpy", cfg).passed
    assert "module 'einops'" in _static("import einops", cfg).message


def test_seccomp_filter_builds_here() -> None:
    from evolve.gates.seccomp import DENY, build_filter

    _, filtered, unknown = build_filter(1234)
    assert set(DENY) <= set(filtered) and unknown == []


# ---------------------------------------------------------------- the corpus, sandboxed

def _snapshot(paths: list[Path]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for root in paths:
        try:
            out[str(root)] = tuple(sorted(os.listdir(root)))
        except OSError:
            out[str(root)] = ()
    return out


def _owned_by_nobody(paths: list[Path]) -> set[str]:
    found = set()
    for root in paths:
        try:
            for entry in os.scandir(root):
                if entry.stat(follow_symlinks=False).st_uid == 65534:
                    found.add(entry.path)
        except OSError:
            continue
    return found


def _processes_mentioning(text: str) -> list[str]:
    hits = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            hits.append(cmdline[:200])
    return hits


SHARED_DIRS = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path.home(), Path.cwd()]


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every fixture through every gate, and the sandbox-only runs; with the world around."""
    root = tmp_path_factory.mktemp("candidates")
    folders = {}
    for path in CORPUS:
        folder = root / path.stem
        folder.mkdir()
        shutil.copy(path, folder / "mixer.py")
        folders[path.name] = folder
    watched = SHARED_DIRS + [root, FIXTURES]
    before = _snapshot(watched)
    nobody_before = _owned_by_nobody(SHARED_DIRS)
    model = default_model_config()

    def full(name: str) -> CheckReport:
        return check_file(folders[name] / "mixer.py", TEST_CFG, model=model)

    def sandboxed(name: str) -> CheckReport:
        return run_sandboxed((folders[name] / "mixer.py").resolve(), TEST_CFG, model,
                             ("interface",))

    os.environ["EVOLVE_TEST_SECRET_KEY"] = "must-not-reach-the-sandbox"
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            # The slowest first, so that the pool stays busy to the end.
            order = sorted(folders, key=lambda n: not n.startswith(("quad", "iface_inf", "ok")))
            reports = dict(zip(order, pool.map(full, order)))
            sandbox = dict(zip([p.name for p in SANDBOXED],
                               pool.map(sandboxed, [p.name for p in SANDBOXED])))
    finally:
        del os.environ["EVOLVE_TEST_SECRET_KEY"]
    return {"reports": reports, "sandbox": sandbox, "folders": folders, "root": root,
            "watched": watched, "before": before, "after": _snapshot(watched),
            "nobody_before": nobody_before, "nobody_after": _owned_by_nobody(SHARED_DIRS)}


def _message(report: CheckReport, gate: str) -> str:
    verdict = report.verdict(gate)
    return verdict.message if verdict else json.dumps(report.sandbox)[:2000]


@pytest.mark.slow
@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_fixture_gets_its_verdict(corpus_runs: dict, path: Path) -> None:
    gate, regex = expectation(path, "expect")  # type: ignore[misc]
    report: CheckReport = corpus_runs["reports"][path.name]
    if gate == "pass":
        assert report.passed, format_report(report)
        assert [v.gate for v in report.verdicts] == list(GATES)
        return
    assert report.failed_gate == gate, format_report(report)
    assert all(v.passed for v in report.verdicts[:-1]) and report.verdicts[-1].gate == gate
    assert re.search(regex, _message(report, gate), re.S), _message(report, gate)


@pytest.mark.slow
@pytest.mark.parametrize("path", SANDBOXED, ids=[p.name for p in SANDBOXED])
def test_sandbox_alone_stops_escape(corpus_runs: dict, path: Path) -> None:
    gate, regex = expectation(path, "sandbox")  # type: ignore[misc]
    report: CheckReport = corpus_runs["sandbox"][path.name]
    verdict = report.verdict(gate)
    assert verdict is not None and not verdict.passed, format_report(report)
    assert re.search(regex, verdict.message, re.S), verdict.message
    assert "must-not-reach" not in verdict.message


@pytest.mark.slow
def test_no_fixture_changed_anything_or_left_a_process(corpus_runs: dict) -> None:
    for name, folder in corpus_runs["folders"].items():
        assert sorted(os.listdir(folder)) == ["mixer.py"], name
    before, after = corpus_runs["before"], corpus_runs["after"]
    for place in (str(corpus_runs["root"]), str(FIXTURES)):
        assert before[place] == after[place], place
    for place, names in after.items():
        assert not [n for n in names if MARKER in n], (place, names)
    assert corpus_runs["nobody_after"] <= corpus_runs["nobody_before"]
    assert _processes_mentioning(str(corpus_runs["root"])) == []
    assert _processes_mentioning(MARKER) == []


@pytest.mark.slow
def test_sandbox_reports_its_layers(corpus_runs: dict) -> None:
    report: CheckReport = corpus_runs["reports"]["ok_cumsum_linear_attention.py"]
    layers = report.sandbox["layers"]
    assert layers["rlimit_fsize"] == 0 and layers["rlimit_core"] == 0
    assert layers["rlimit_as_mb"] > layers["torch_address_space_mb"]
    assert layers["audit_hook"] == "on"
    assert layers["seccomp"].startswith("on"), layers["seccomp"]  # every architecture
    if os.geteuid() == 0:
        assert "nobody" in layers["user"] and "RLIMIT_NPROC" in layers["user"]


# ---------------------------------------------------------------- the layers, one at a time

SECCOMP_PROBE = r"""
import os, socket, subprocess, sys
from evolve.gates.seccomp import install_filter
print(install_filter())
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "succeeded"
    except OSError as exc:
        results[name] = exc.errno
attempt("write", lambda: open(sys.argv[1] + "/EVOLVE_PWNED_seccomp", "w"))
attempt("mkdir", lambda: os.mkdir(sys.argv[1] + "/EVOLVE_PWNED_dir"))
attempt("fork", os.fork)
attempt("popen", lambda: subprocess.run(["true"]))
attempt("socket", socket.socket)
results["system"] = os.system("true")
import threading
t = threading.Thread(target=lambda: None); t.start(); t.join()
results["read"] = len(open("/proc/self/status").read()) > 0
print(results)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="seccomp is a Linux facility")
def test_seccomp_filter_alone_blocks_writes_processes_sockets(tmp_path: Path) -> None:
    # No audit hook, no privilege drop: the kernel filter by itself, even for root.
    out = subprocess.run([sys.executable, "-c", SECCOMP_PROBE, str(tmp_path)], check=True,
                         capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out[0].startswith(f"on ({platform.machine()} via libseccomp"), out[0]
    results = ast.literal_eval(out[1])
    eperm = 1
    assert results["write"] == results["mkdir"] == results["fork"] == eperm
    assert results["popen"] == results["socket"] == eperm
    assert results["system"] != 0 and results["read"] is True
    assert os.listdir(tmp_path) == []


def test_static_rejection_starts_no_torch(tmp_path: Path) -> None:
    (tmp_path / "mixer.py").write_text("import os\n")
    report = check_file(tmp_path / "mixer.py", TEST_CFG)
    assert report.failed_gate == "imports"
    assert "layers" in report.sandbox and report.sandbox["layers"] == {}  # never isolated
    assert report.elapsed_s < 5


def test_startup_that_cannot_finish_is_incomplete_not_a_verdict(tmp_path: Path) -> None:
    # Killed while importing torch (or earlier, on a busy machine): an infrastructure problem
    # to retry, not a verdict on the candidate.
    shutil.copy(FIXTURES / "ok_cumsum_linear_attention.py", tmp_path / "mixer.py")
    report = check_file(tmp_path / "mixer.py", replace(TEST_CFG, startup_timeout_s=0.5))
    assert not report.passed and report.failed_gate is None
    assert "did not start" in report.sandbox["incomplete"]
    assert {v.gate for v in report.verdicts} <= {"parse", "imports"}


def test_keep_going_runs_gates_whose_prerequisites_passed(tmp_path: Path) -> None:
    # Unmasked softmax attention: fails causality and cost; smoke passes, params passes.
    shutil.copy(FIXTURES / "leak_full_mask.py", tmp_path / "mixer.py")
    cfg = replace(TEST_CFG, stop_at_first_failure=False)
    report = check_file(tmp_path / "mixer.py", cfg)
    results = {v.gate: v.passed for v in report.verdicts}
    assert results == {"parse": True, "imports": True, "interface": True, "smoke": True,
                       "causality": False, "cost": False, "params": True}


def test_check_candidate_writes_checks_json_and_cli(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mixer.py").write_text("import torch\nclass Mixer(torch.nn.Module:\n    pass\n")
    report = check_candidate(tmp_path)
    assert report.failed_gate == "parse"
    saved = json.loads((CandidatePaths.of(tmp_path).checks).read_text())
    assert saved["failed_gate"] == "parse" and "mixer.py:2" in saved["verdicts"][0]["message"]
    (CandidatePaths.of(tmp_path).checks).unlink()
    assert main_check([str(tmp_path / "mixer.py"), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["failed_gate"] == "parse"
    assert not (CandidatePaths.of(tmp_path).checks).exists()  # the CLI writes only with --write
    assert main_check([str(tmp_path / "mixer.py"), "--write", "--gates", "parse"]) == 1
    assert (CandidatePaths.of(tmp_path).checks).exists()


# ---------------------------------------------------------------- the cost gate's rule

# The cost gate in this process, on real mixers; only the clock is ever stood in for.
COST_CFG = replace(TEST_CFG, cost_repeats=1)
# Seconds per forward+backward as measured for a mixer linear in memory and FLOPs once its
# saved tensors outgrew the caches (issue 12): T^1.51 over T=1024..4096.
CACHE_CLIFF = {256: 0.0110, 512: 0.0220, 1024: 0.0437, 2048: 0.0953, 4096: 0.3566}
QUADRATIC_TIME = {t: 2e-8 * t * t for t in CACHE_CLIFF}

ELEMENTWISE_SQUARE = """
import torch
import torch.nn as nn

class Mixer(nn.Module):
    # a causal [B, T, T] weight built by broadcasting and sigmoid: no matmul sees it
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_size
        self.a, self.c = nn.Linear(d, 1), nn.Linear(d, 1)
        self.v = nn.Linear(d, d, bias=False)

    def forward(self, x):
        w = torch.sigmoid(self.a(x) + self.c(x).transpose(1, 2)).tril()  # [B, T, T]
        return self.v(x) * w.sum(-1, keepdim=True) / x.shape[1]
"""

SQUARE_BESIDE_LINEAR = """
import torch
import torch.nn as nn

class Mixer(nn.Module):
    # a [T, T] bool mask saved by torch.where, beside 8 KiB of linear activations per token
    # (gelu saves its input, down its output): saved memory grows only as T^1.22 over
    # T=1024..4096
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_size
        self.a = nn.Linear(d, 1)
        self.up = nn.Linear(d, 16 * d)
        self.down = nn.Linear(16 * d, d, bias=False)

    def forward(self, x):
        t = x.shape[1]
        s = self.a(x)[0]  # [T, 1]
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        w = torch.where(mask, s + s.T, 0.0)  # [T, T]
        return self.down(nn.functional.gelu(self.up(x))) * w.sum(-1, keepdim=True) / t
"""


class ScriptedTimer:
    """Test double for the cost gate's timer only: cache cliffs and a neighbour's load cannot
    be forced reliably. Runs every forward+backward for real, then reports the seconds that
    `rounds` gives for that length: rounds[0] for the first `repeats` calls at a length (the
    gate's first round), rounds[1] after."""

    def __init__(self, rounds: list[dict[int, float]], repeats: int) -> None:
        self.rounds, self.repeats = rounds, repeats
        self.calls: dict[int, int] = {}

    def __call__(self, step, length: int) -> float:  # type: ignore[no-untyped-def]
        step()
        self.calls[length] = self.calls.get(length, 0) + 1
        return self.rounds[0 if self.calls[length] <= self.repeats else 1][length]


def _cost_in_process(path: Path, timer=None) -> Verdict:  # type: ignore[no-untyped-def]
    from evolve.gates.cost import cost, cpu_time
    from evolve.gates.runtime import load_class
    from evolve.gates.static import Context

    ctx = Context(path=path, source=path.read_bytes(), cfg=COST_CFG,
                  model=default_model_config())
    ctx.cls, err = load_class(ctx)
    assert err is None, err
    return cost(ctx, timer or cpu_time)


def test_cost_gate_passes_a_linear_mixer_whose_time_jumps_at_the_cache() -> None:
    verdict = _cost_in_process(FIXTURES / "ok_cumsum_linear_attention.py",
                               ScriptedTimer([CACHE_CLIFF], COST_CFG.cost_repeats))
    m = verdict.measured
    assert verdict.passed, verdict.message
    assert m["memory_exponent"] <= COST_CFG.cost_exponent_bound
    assert m["flops_exponent"] <= COST_CFG.cost_exponent_bound
    # time alone grows faster than the bound, which used to fail the mixer
    assert m["time_exponent"] == pytest.approx(1.51, abs=0.01) and m["time_bound"] == 1.8
    assert m["time_exponents"] == [m["time_exponent"]] and m["remeasured"] is False
    assert [p["time_s"] for p in m["points"]] == list(CACHE_CLIFF.values())


@pytest.mark.parametrize("rounds, passed", [
    ([QUADRATIC_TIME, CACHE_CLIFF], True),  # a burst of load during the first round
    ([QUADRATIC_TIME, QUADRATIC_TIME], False),  # quadratic elementwise work, nothing saved
])
def test_cost_gate_fails_on_time_only_when_two_rounds_agree(rounds: list[dict[int, float]],
                                                            passed: bool) -> None:
    verdict = _cost_in_process(FIXTURES / "ok_cumsum_linear_attention.py",
                               ScriptedTimer(rounds, COST_CFG.cost_repeats))
    m = verdict.measured
    assert verdict.passed is passed, verdict.message
    assert m["remeasured"] is True and m["time_exponents"][0] == pytest.approx(2.0)
    assert m["time_exponent"] == min(m["time_exponents"])
    if not passed:
        assert re.search(r"cost grows faster than T\^1\.3: CPU time as T\^2\.00 and T\^2\.00 "
                         r"in two independent measurements .* saved activations grew as "
                         r"T\^1\.00 and FLOPs as T\^1\.00", verdict.message), verdict.message


@pytest.mark.parametrize("source, message", [
    (ELEMENTWISE_SQUARE, r"saved activations as T\^1\.[5-9]\d, saved memory as T\^2: .* "
                         r"\(float32 \[1, 4096, 4096\] \(64\.0 MiB\) at T=4096\)"),
    (SQUARE_BESIDE_LINEAR, r"cost grows faster than T\^1\.3: saved memory as T\^2: a tensor "
                           r"saved for backward has two dimensions of length T at every T from "
                           r"1024 \(bool \[4096, 4096\] \(16\.0 MiB\) at T=4096\)"),
], ids=["elementwise_square", "square_beside_linear"])
def test_cost_gate_fails_quadratic_elementwise_work(tmp_path: Path, source: str,
                                                    message: str) -> None:
    # The real clock; the deterministic figures fail these before time is measured.
    (tmp_path / "mixer.py").write_text(source)
    verdict = _cost_in_process(tmp_path / "mixer.py")
    m = verdict.measured
    assert not verdict.passed and re.search(message, verdict.message), verdict.message
    assert m["flops_exponent"] <= COST_CFG.cost_exponent_bound  # FLOP counting does not see it
    assert m["square_saved"] and "time_exponent" not in m
    if source is SQUARE_BESIDE_LINEAR:  # the saved shape alone catches it
        assert m["memory_exponent"] <= COST_CFG.cost_exponent_bound


@pytest.mark.slow
def test_baselines_pass_every_gate_but_softmax_fails_only_cost() -> None:
    cfg = replace(TEST_CFG, stop_at_first_failure=False)
    for name in BASELINE_NAMES:
        report = check_file(name, cfg)
        results = {v.gate: v.passed for v in report.verdicts}
        expected = {g: not (name == "softmax" and g == "cost") for g in GATES}
        assert results == expected, format_report(report)
        cost = report.verdict("cost")
        assert cost is not None
        if name == "softmax":
            # quadratic in FLOPs; its memory is linear when SDPA picks the fused CPU kernel,
            # as it does on the contiguous q/k/v of the short convolution
            assert cost.measured["flops_exponent"] > cfg.cost_exponent_bound
            assert "FLOPs as T^" in cost.message
        else:
            for key in ("memory_exponent", "flops_exponent"):
                assert cost.measured[key] <= cfg.cost_exponent_bound, (name, cost.measured)
            # caches may make time super-linear; it fails a mixer only at a far larger exponent
            assert cost.measured["time_exponent"] < cost.measured["time_bound"], cost.measured
            assert cost.measured["square_saved"] is None


@pytest.mark.slow
def test_cpu_limit_kills_a_busy_loop(tmp_path: Path) -> None:
    # The wall-clock limit is far away; RLIMIT_CPU (startup ~3 s of CPU + the loop) ends it.
    shutil.copy(FIXTURES / "iface_infinite_loop_forward.py", tmp_path / "mixer.py")
    cfg = replace(TEST_CFG, cpu_limit_s=12, gate_timeout_s=300.0)
    report = check_file(tmp_path / "mixer.py", cfg)
    verdict = report.verdict("interface")
    assert verdict is not None and not verdict.passed
    assert "CPU-time limit of 12 s" in verdict.message, verdict.message
    assert report.sandbox["exit_status"] == -24  # SIGXCPU
