"""The HTML report of a real demo-size run: every image exists and is a PNG, every candidate has
its section, every link resolves, nothing model-written reaches the page unescaped. And, on a
synthetic run with follow-ups (replicas, a confirmation, a promotion, an ablation) and model
calls: the leaderboard, `evolve status`, `evolve show` and the report's Confirmation and
Ablation sections."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import run_config_dict, trained_candidate

from evolve.views.board import leaderboard, print_candidate, print_status, print_top, status
from evolve.agents.cognition import Cognition, CognitionConfig
from evolve.search.run_config import load_run_config
from evolve.search.driver import Driver
from evolve.state.fsio import read_json
from evolve.views.report import esc, pareto_front, write_report
from evolve.state.store import Store

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("owned")</script><img src=x onerror=alert(1)>'


def mini_config(root: Path) -> Path:
    """Two baselines and two proposals, 6-step trainings, no lm-eval (as tests/test_driver.py)."""
    cfg = run_config_dict(root / "state", search={"max_candidates": 2})
    path = root / "mini.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_run_config(mini_config(tmp_path_factory.mktemp("report")))
    driver = Driver(cfg)
    assert driver.run() == 0 and driver.stop_reason == "complete"
    return cfg.run_dir


class Page(HTMLParser):
    """The tags of a page that the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "a":
            self.links.append(a.get("href") or "")
        if a.get("id"):
            self.ids.add(a["id"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(index: Path) -> Page:
    page = Page()
    page.feed(index.read_text(encoding="utf-8"))
    return page


@pytest.mark.slow
def test_report_renders_every_plot_and_candidate(run: Path, tmp_path: Path) -> None:
    index = write_report(run, tmp_path / "out")
    assert index == tmp_path / "out" / "index.html"
    page = parse(index)
    # The progress, lineage, Pareto and curves plots have data in any finished run.
    assert {"progress.png", "lineage.png", "pareto.png", "curves.png"} <= set(page.images)
    for src in page.images:
        assert not src.startswith(("/", "http:", "https:")), src  # readable after scp
        assert (index.parent / src).read_bytes()[:8] == PNG_MAGIC, src
    state = Store.open(run).replay()
    # Two baselines and two trained proposals (a proposal the gates rejected is not counted).
    assert sum(c.status == "analyzed" for c in state.candidates.values()) == 4
    for cid in state.candidates:
        assert cid in page.ids, f"{cid} has no section"
    for href in page.links:
        assert href.startswith("#") and href[1:] in page.ids, f"dangling link {href}"
    text = " ".join(page.text)
    assert "deltanet" in text and "linear_attention" in text and "Leaderboard" in text
    assert "wall-clock" not in text  # the axis label lives in the PNG, not in the page


@pytest.mark.slow
def test_model_written_text_is_escaped_and_failures_are_counted(run: Path,
                                                                tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.pt", "jobs"))
    store = Store.open(copy, writer=True)
    first = store.candidate_ids()[-1]
    prop = store.candidate(first).proposal
    store.write_json(prop, {**read_json(prop), "motivation": HOSTILE + " builds on c000000"})
    analysis = store.candidate(first).analysis
    lesson = {"title": HOSTILE, "insight": "x", "guidance": "y", "evidence": [first, "c999999"]}
    store.write_json(analysis, {**read_json(analysis), "lessons": [lesson]})
    # A proposal rejected by a gate, and a training that failed, as the driver records them.
    rejected = store.new_candidate(generation=2, parents=[first])
    store.write_json(store.candidate(rejected).proposal, {"kind": "proposal", "motivation": "r"})
    store.write_json(store.candidate(rejected).checks,
                     {"passed": False, "failed_gate": "causality"})
    store.record("checked", rejected, passed=False, failed_gate="causality",
                 error="output at t depends on t+1 " + HOSTILE)
    broken = store.new_candidate(generation=2, parents=[first])
    store.record("failed", broken, error="RuntimeError: loss is nan")
    # A lesson merged into the run's cognition base, citing its candidate.
    base = Cognition(store.cognition_dir, lock=store.lock("cognition"),
                     config=CognitionConfig(backend="bm25", seed=False))
    entry = base.add({"title": "cognition " + HOSTILE, "insight": "a short conv helps recall",
                      "source": f"run mini: {first}"})

    index = write_report(copy, copy / "report")
    html = index.read_text(encoding="utf-8")
    page = parse(index)
    assert "script" not in page.tags
    assert set(page.images) >= {"failures.png"} and "x" not in page.images
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in html
    assert '<a href="#c000000">c000000</a>' in html  # ids in model text link to their section
    assert '<a href="#c999999">' not in html  # unknown ids stay plain text
    text = " ".join(page.text)
    assert "gate: causality" in text and "training (job failed)" in text
    assert "loss is nan" in text
    assert f"{entry.id} (lesson): cognition <script>" in text  # shown as text, not markup
    assert f'run mini: <a href="#{first}">{first}</a>' in html


@pytest.mark.slow
def test_cli_writes_the_report_into_the_run(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.pt", "jobs"))
    proc = subprocess.run([sys.executable, "-m", "evolve.cli.main", "report", str(copy)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    index = copy / "report" / "index.html"
    assert proc.stdout.strip() == str(index) and index.is_file()
    bad = subprocess.run([sys.executable, "-m", "evolve.cli.main", "report", str(tmp_path / "nope")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not an evolve run" in bad.stderr


def test_escape_and_pareto_front() -> None:
    assert esc(HOSTILE) == ("&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;&lt;img "
                            "src=x onerror=alert(1)&gt;")
    assert esc(None) == "" and esc("a'b") == "a&#x27;b"
    # (tokens/s, bpb): faster and lower is better; (2, 5) is beaten by (3, 4).
    points = [(1.0, 3.0), (2.0, 5.0), (3.0, 4.0), (4.0, 4.5), (0.5, 3.5)]
    assert pareto_front(points) == [(4.0, 4.5), (3.0, 4.0), (1.0, 3.0)]


# ---- follow-ups, confirmations, ablation and the model, on a synthetic run ------------------
# The files are written as evolve/search/driver.py writes them (proposal.json kinds, confirmation.json
# from evolve.search.followup.confirm, ablation.json, llm/<role>-<n>.json), without training anything.

MODEL_SOURCE = "local llama.cpp smollm2 at http://127.0.0.1:8080"


def _trained(store: Store, proposal: dict, fitness: float, bpb: float,
             status_event: str = "scored", parents: list[str] = ()) -> str:
    return trained_candidate(store, proposal, fitness=fitness, bpb=bpb,
                             generation=0 if proposal["kind"] == "baseline" else 1,
                             parents=parents, status_event=status_event)


def _call(store: Store, cid: str, role: str, n: int) -> None:
    store.write_json(store.candidate(cid).llm / f"{role}-{n}.json",
                     {"role": role, "model": "smollm2", "response": "..."})


@pytest.fixture()
def followup_run(tmp_path: Path) -> dict[str, str | Path]:
    store = Store.create(tmp_path / "run", {"name": "synthetic"})
    store.record("llm_ready", source="an earlier model")
    store.record("driver_start", pid=1, host="h", proposer="llm-spec")
    store.record("llm_ready", source=MODEL_SOURCE)
    ids: dict[str, str | Path] = {"run": store.root}
    base = lambda name, seed, preset=None: {"kind": "baseline", "name": name, "seed": seed,
                                            "preset": preset, "proposer": "baseline",
                                            "motivation": f"baseline {name}"}
    ids["ref"] = _trained(store, base("deltanet", 0), 0.01, 1.50)
    _trained(store, base("deltanet", 1), -0.02, 1.52)
    _trained(store, base("deltanet", 2), 0.01, 1.49)
    ids["lin"] = _trained(store, base("linear_attention", 0), -0.30, 1.80)
    ids["verify_ref"] = _trained(store, base("deltanet", 0, "verify"), 0.0, 1.3)
    llm = {"kind": "proposal", "proposer": "llm-spec", "model": "smollm2-135m",
           "prompt_hash": "0123456789abcdef", "edits": [{"field": "beta", "value": "sigmoid2"}],
           "changes": ["beta: sigmoid -> sigmoid2"], "lessons_used": ["L0007"], "seed": 0,
           "name": "deltanet-sig2", "motivation": "a wider beta range", "attempts": 1}
    best = ids["best"] = _trained(store, llm, 0.06, 1.44, parents=[str(ids["ref"])])
    for role, n in (("researcher", 1), ("researcher", 2), ("analyzer", 1)):
        _call(store, best, role, n)
    store.write_json(store.candidate(best).analysis, {"analyzer": "llm", "analysis": "helps",
                                                      "lessons": []})
    store.record("analyzed", best, analyzer="llm")
    rep = lambda seed, preset=None: {"kind": "replica", "of": best, "seed": seed,
                                     "preset": preset, "proposer": "replica", "name":
                                     "deltanet-sig2", "motivation": f"confirmation: {best}"}
    ids["r1"] = _trained(store, rep(1), 0.05, 1.45, parents=[best])
    ids["r2"] = _trained(store, rep(2), 0.07, 1.43, parents=[best])
    ids["rv"] = _trained(store, rep(0, "verify"), 0.01, 1.29, parents=[best])
    members = [best, ids["r1"], ids["r2"]]
    store.write_json(store.candidate(best).dir / "confirmation.json", {
        "seeds": 3, "reference_seeds": 3, "reference": "deltanet",
        "fitness": {"mean": 0.06, "ci95": 0.02, "values": [0.06, 0.05, 0.07]},
        "delta_bpb": {"mean": -0.06, "ci95": 0.02, "values": [-0.06, -0.05, -0.07]},
        "better": True, "worse": False, "candidate": best, "preset": None,
        "members": members, "failed": 0})
    store.record("confirmed", best, preset=None, better=True, seeds=3, mean=0.06, ci95=0.02)
    store.write_json(store.candidate(best).dir / "confirmation-verify.json", {
        "seeds": 1, "reference_seeds": 1, "reference": "deltanet",
        "fitness": {"mean": 0.01, "ci95": float("nan"), "values": [0.01]},
        "better": False, "worse": False, "candidate": best, "preset": "verify",
        "members": [ids["rv"]], "failed": 0})
    fallback = {"kind": "proposal", "proposer": "mutator", "operator": "point", "seed": 0,
                "motivation": "mutator in the model's place", "llm_error": "truncated JSON",
                "llm_attempts": 2}
    ids["fallback"] = _trained(store, fallback, -0.01, 1.51, parents=[str(ids["ref"])])
    _call(store, str(ids["fallback"]), "researcher", 1)
    abl = lambda field: {"kind": "ablation", "of": best, "revert": field, "seed": 0,
                         "proposer": "ablation", "motivation": f"ablation of {best}: {field}"}
    ids["a_beta"] = _trained(store, abl("beta"), 0.01, 1.49, parents=[best])
    ids["a_conv"] = _trained(store, abl("conv_size"), 0.0, 0.0, status_event="running",
                             parents=[best])
    store.write_json(store.root / "ablation.json", {
        "candidate": best, "baseline": "deltanet", "complete": True,
        "chosen": "the best candidate confirmed better than the reference",
        "plan": [{"field": "beta", "from": "sigmoid2", "to": "sigmoid", "note": ""},
                 {"field": "conv_size", "from": 4, "to": None, "note": ""},
                 {"field": "gate", "from": "none", "to": "scalar",
                  "note": "inert in this design: reverting it changes nothing"}],
        "table": [{"field": "beta", "seeds": 3, "failed": 0,
                   "fitness": {"mean": 0.01, "ci95": 0.01},
                   "contribution_fitness": {"mean": 0.05, "ci95": 0.02},
                   "delta_bpb": {"mean": -0.01, "ci95": 0.01},
                   "contribution_delta_bpb": {"mean": -0.05, "ci95": 0.02}},
                  {"field": "conv_size", "seeds": 2, "failed": 1,
                   "fitness": {"mean": 0.07, "ci95": float("nan")},
                   "contribution_fitness": {"mean": -0.01, "ci95": float("nan")}}]})
    return ids


def test_leaderboard_folds_follow_ups_into_their_candidate(followup_run, capsys) -> None:
    run = Path(followup_run["run"])
    rows = leaderboard(run)
    by_id = {r["id"]: r for r in rows}
    best, ref = followup_run["best"], followup_run["ref"]
    # Proposals and one row per baseline name at the run's preset; no replica, no ablation.
    assert set(by_id) == {best, followup_run["fallback"], ref, followup_run["lin"]}
    assert rows[0]["id"] == best
    b = by_id[best]
    assert (b["seeds"], b["mean"], b["ci95"], b["verdict"]) == (3, 0.06, 0.02, "better")
    assert b["fitness"] == 0.06 and b["verify"] == {"verify": "="} and b["replicas"] == 2
    f = by_id[followup_run["fallback"]]
    assert (f["seeds"], f["mean"], f["ci95"], f["verdict"], f["verify"]) == \
        (1, -0.01, None, "-", {})
    r = by_id[ref]
    assert r["kind"] == "baseline" and r["label"] == "deltanet" and r["seeds"] == 3
    assert r["mean"] == pytest.approx(0.0) and r["ci95"] > 0 and len(r["members"]) == 3
    assert r["bpb"] == pytest.approx((1.50 + 1.52 + 1.49) / 3)
    assert by_id[followup_run["lin"]]["ci95"] is None  # one seed: no interval

    assert print_top(run, as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(rows))
    assert print_top(run) == 0  # plain text (stdout is not a terminal under pytest)
    out = capsys.readouterr().out
    head, first = out.splitlines()[:2]
    assert "mean ± ci95" in head and "verdict" in head and "promotion" in head
    assert best in first and "+0.0600 ± 0.0200" in first and "better" in first
    assert "verify: =" in first


def test_status_counts_follow_ups_confirmations_and_model_calls(followup_run, capsys) -> None:
    run = Path(followup_run["run"])
    s = status(run)
    assert s["follow_ups"] == {"replica": {"in_flight": 0, "done": 3, "failed": 0},
                               "ablation": {"in_flight": 1, "done": 1, "failed": 0}}
    assert s["confirmed"] == {"candidates": 1, "better": 1, "worse": 0, "same": 0}
    assert s["promoted"] == {"verify": {"candidates": 1, "better": 0, "worse": 0, "same": 1}}
    assert s["ablation"] == {"candidate": followup_run["best"], "baseline": "deltanet",
                             "complete": True, "fields": 3, "skipped": 1, "rows": 2}
    assert s["llm"] == {"source": MODEL_SOURCE, "calls": {"analyzer": 1, "researcher": 3},
                        "proposals": 1, "fallbacks": 1, "analyzers": {"llm": 1}}
    assert s["best"]["id"] == followup_run["best"]
    assert print_status(run, as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["llm"]["source"] == MODEL_SOURCE
    assert print_status(run) == 0
    out = capsys.readouterr().out
    assert "replicas 0 in flight, 3 done" in out and "ablations 1 in flight, 1 done" in out
    assert "confirmed: 1 candidates, 1 better" in out and "promoted to verify: 1" in out
    assert f"model: {MODEL_SOURCE}" in out and "researcher 3" in out
    assert "by the mutator in its place 1" in out


def test_show_tells_verdicts_model_and_what_a_follow_up_retrains(followup_run, capsys) -> None:
    run = Path(followup_run["run"])
    best = followup_run["best"]
    assert print_candidate(run, best) == 0
    out = capsys.readouterr().out
    assert "proposed by the model: smollm2-135m (llm-spec, prompt 0123456789abcdef" in out
    assert "changes: beta: sigmoid -> sigmoid2" in out and "lessons used: L0007" in out
    assert '"sigmoid2"' in out  # the edits
    assert "stored model calls: analyzer 1, researcher 2" in out
    assert "confirmation: better: fitness +0.0600 ± 0.0200 over 3 seeds" in out
    assert "verify (verify): =: fitness +0.0100 over 1 seeds" in out
    assert f"replicas: {followup_run['r1']}, {followup_run['r2']}, {followup_run['rv']}" in out
    assert f"{followup_run['a_beta']} (beta)" in out and "analysis (llm): helps" in out
    assert print_candidate(run, best, as_json=True) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["confirmation"]["better"] is True and info["promotions"]["verify"]["seeds"] == 1
    assert info["llm_calls"] == {"analyzer": 1, "researcher": 2} and info["kind"] == "proposal"

    print_candidate(run, str(followup_run["fallback"]))
    out = capsys.readouterr().out
    assert "proposer: mutator (point)" in out and "confirmation" not in out
    assert "the mutator filled the slot: truncated JSON" in out
    print_candidate(run, str(followup_run["a_beta"]))
    assert f"re-trains: {best} with its beta change reverted (seed 0)" in capsys.readouterr().out
    print_candidate(run, str(followup_run["rv"]))
    assert f"re-trains: {best} with seed 0 at preset verify" in capsys.readouterr().out


def test_report_has_confirmation_and_ablation_sections(followup_run, tmp_path: Path) -> None:
    run = Path(followup_run["run"])
    index = write_report(run, tmp_path / "out")
    page = parse(index)
    html = index.read_text(encoding="utf-8")
    assert "ablation.png" in page.images
    for src in page.images:
        assert (index.parent / src).read_bytes()[:8] == PNG_MAGIC, src
    for cid in Store.open(run).replay().candidates:
        assert cid in page.ids
    for href in page.links:
        assert href.startswith("#") and href[1:] in page.ids, f"dangling link {href}"
    text = " ".join(page.text)
    assert "Confirmation" in text and "Ablation" in text
    assert "+0.0600 ± 0.0200" in text and "better" in text  # leaderboard and confirmation
    assert "+0.0500 ± 0.0200" in text  # beta's contribution
    assert "sigmoid2 → sigmoid" in text
    assert "Chosen as the best candidate confirmed better than the reference." in text
    assert "skipped: inert in this design: reverting it changes nothing" in text
    assert "-0.0100" in text  # conv_size's contribution, no interval over one failed seed
    assert f"model</th><td>{MODEL_SOURCE}" in html
    assert "the mutator filled the slot: truncated JSON" in text


def test_report_without_follow_ups_omits_their_sections(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "run", {"name": "plain"})
    _trained(store, {"kind": "baseline", "name": "deltanet", "seed": 0, "preset": None,
                     "motivation": "baseline deltanet"}, 0.0, 1.5)
    index = write_report(store.root, tmp_path / "out")
    page = parse(index)
    text = " ".join(page.text)
    assert "Leaderboard" in text and "Confirmation" not in text and "Ablation" not in text
    assert "ablation.png" not in page.images and not (tmp_path / "out" / "ablation.png").exists()
    for src in page.images:
        assert (index.parent / src).read_bytes()[:8] == PNG_MAGIC, src

    # `evolve verify --ablate` queues an ablation: ablation.json names its candidate only.
    cid = Store.open(store.root).candidate_ids()[0]
    store.write_json(store.root / "ablation.json", {"candidate": cid, "plan": [],
                                                    "complete": False})
    assert status(store.root)["ablation"] == {"candidate": cid, "baseline": None,
                                              "complete": False, "fields": 0, "skipped": 0,
                                              "rows": 0}
    index = write_report(store.root, tmp_path / "out2")
    page = parse(index)
    text = " ".join(page.text)
    assert "Ablation" in text and "in progress" in text and "ablation.png" not in page.images
