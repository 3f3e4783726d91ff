"""The HTML report of a real demo-size run: every image exists and is a PNG, every candidate has
its section, every link resolves, nothing model-written reaches the page unescaped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from evolve.cognition import Cognition, CognitionConfig
from evolve.config import load_run_config
from evolve.driver import Driver
from evolve.fsio import read_json
from evolve.report import esc, pareto_front, write_report
from evolve.store import Store

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("owned")</script><img src=x onerror=alert(1)>'


def mini_config(root: Path) -> Path:
    """Two baselines and two proposals, 6-step trainings, no lm-eval (as tests/test_driver.py)."""
    cfg = {
        "name": "mini", "root": str(root / "state"), "preset": "tiny",
        "train": {"lm": {"max_steps": 6, "checkpoint_every": 3, "log_every": 2},
                  "mqar": {"max_steps": 6, "batch_size": 16, "checkpoint_every": 3,
                           "log_every": 2},
                  "eval": {"lm_eval_tasks": [], "bpb_windows": 4},
                  "mqar_task": {"num_eval_examples": 32},
                  "runtime": {"num_threads": 1}},
        "search": {"proposer": "mutator", "max_candidates": 2, "generation_size": 2,
                   "max_in_flight": 4, "baselines": ["deltanet", "linear_attention"],
                   "poll_s": 0.3},
        "launch": {"executor": "local", "array_parallelism": 2, "timeout_min": 20,
                   "poll_s": 0.5},
    }
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
    assert len(state.candidates) == 4
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
    proc = subprocess.run([sys.executable, "-m", "evolve.cli", "report", str(copy)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    index = copy / "report" / "index.html"
    assert proc.stdout.strip() == str(index) and index.is_file()
    bad = subprocess.run([sys.executable, "-m", "evolve.cli", "report", str(tmp_path / "nope")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not an evolve run" in bad.stderr


def test_escape_and_pareto_front() -> None:
    assert esc(HOSTILE) == ("&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;&lt;img "
                            "src=x onerror=alert(1)&gt;")
    assert esc(None) == "" and esc("a'b") == "a&#x27;b"
    # (tokens/s, bpb): faster and lower is better; (2, 5) is beaten by (3, 4).
    points = [(1.0, 3.0), (2.0, 5.0), (3.0, 4.0), (4.0, 4.5), (0.5, 3.5)]
    assert pareto_front(points) == [(4.0, 4.5), (3.0, 4.0), (1.0, 3.0)]
