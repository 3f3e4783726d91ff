"""The leaderboard's "what" column (the design, not the motivation) in the terminal and the HTML
report, and the report's lineage layout (each candidate under its lineage), on a synthetic run."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import trained_candidate
from evolve.model.space import BASELINE_SPECS
from evolve.state.store import Store
from evolve.views.board import WHAT_WIDTH, leaderboard, print_top, shorten
from evolve.views.report import _layers, load_run, write_report

MOTIVATION = "the model's long-winded reason for this design, which belongs in `evolve show`"


def _trained(store: Store, proposal: dict, fitness: float, generation: int,
             parents: tuple[str, ...] = ()) -> str:
    return trained_candidate(store, proposal, fitness=fitness, bpb=1.5 - fitness,
                             generation=generation, parents=parents)


def _spec(base: str, **changes: object) -> dict:
    return {**BASELINE_SPECS[base].to_dict(), **changes}


@pytest.fixture()
def designs_run(tmp_path: Path) -> dict[str, str]:
    store = Store.create(tmp_path / "run", {
        "name": "views", "search": {"baselines": ["deltanet", "gated_deltanet",
                                                 "linear_attention"]},
        "train": {"lm": {"model": {"conv_size": 4}}}})
    ids = {"run": str(store.root)}
    for name in ("deltanet", "gated_deltanet", "linear_attention"):
        ids[name] = _trained(store, {"kind": "baseline", "name": name, "seed": 0, "preset": None,
                                     "motivation": f"baseline {name}",
                                     "spec": BASELINE_SPECS[name].to_dict()}, 0.0, 0)
    proposal = lambda spec, **more: {"kind": "proposal", "proposer": "mutator",
                                     "motivation": MOTIVATION, "spec": spec, **more}
    # conv_size 4 is the run's width: the same as the baselines' "run's default", no change.
    ids["spec"] = _trained(store, proposal(_spec("deltanet", value_ratio=2.0, out_norm="none",
                                                 conv_size=4)), 0.05, 1, (ids["deltanet"],))
    # deltanet + out_gate silu is one field from deltanet and one (decay) from gated_deltanet:
    # the tie goes to the baseline of its lineage.
    tie = _spec("deltanet", out_gate="silu")
    ids["tie_d"] = _trained(store, proposal(tie), 0.04, 1, (ids["deltanet"],))
    ids["tie_g"] = _trained(store, proposal(tie), 0.03, 2, (ids["gated_deltanet"],))
    ids["long"] = _trained(store, proposal(_spec(
        "linear_attention", feature_map="relu", value_ratio=2.0, key_ratio=0.5,
        position="learned", out_gate="silu")), 0.02, 1, (ids["linear_attention"],))
    ids["code"] = _trained(store, proposal(None, name="my-fancy-mixer"), 0.01, 2,
                           (ids["spec"],))
    # A researcher's seed design: no parent, derives from linear_attention.
    ids["seed"] = _trained(store, proposal(_spec("linear_attention", qk_norm="l2"),
                                           proposer="researcher's seed design"), -0.01, 1)
    return ids


def test_what_is_the_design_not_the_motivation(designs_run: dict[str, str], capsys) -> None:
    by_id = {r["id"]: r["label"] for r in leaderboard(Path(designs_run["run"]))}
    assert by_id[designs_run["deltanet"]] == "deltanet"
    assert by_id[designs_run["spec"]] == "deltanet: out_norm none, value_ratio 2"
    assert by_id[designs_run["tie_d"]] == "deltanet: out_gate silu"
    assert by_id[designs_run["tie_g"]] == "gated_deltanet: decay none"
    assert by_id[designs_run["code"]] == f"code (parent {designs_run['spec']})"
    assert by_id[designs_run["seed"]] == "linear_attention: qk_norm l2"
    long = by_id[designs_run["long"]]
    assert long.startswith("linear_attention: feature_map relu, ") and len(long) > WHAT_WIDTH

    assert print_top(Path(designs_run["run"])) == 0
    out = capsys.readouterr().out
    assert MOTIVATION[:20] not in out
    assert "deltanet: out_norm none, value_ratio 2" in out
    assert f"code (parent {designs_run['spec']})" in out
    assert shorten(long) in out and long not in out
    assert shorten(long).endswith("…") and len(shorten(long)) == WHAT_WIDTH


def test_report_leaderboard_and_candidates_show_the_design(designs_run: dict[str, str],
                                                           tmp_path: Path) -> None:
    page = write_report(Path(designs_run["run"]), tmp_path / "report").read_text()
    spec, code = designs_run["spec"], designs_run["code"]
    assert ('<td title="deltanet: out_norm none, value_ratio 2">'
            "deltanet: out_norm none, value_ratio 2</td>") in page
    # The parent id in "code (parent ID)" links to the parent's section.
    assert f'code (parent <a href="#{spec}">{spec}</a>)</td>' in page
    assert "<th>design</th><td>linear_attention: qk_norm l2</td>" in page
    leaderboard_html = page.split("<h2>Leaderboard</h2>")[1].split("<h2>")[0]
    assert MOTIVATION[:20] not in leaderboard_html
    assert code in leaderboard_html


def test_lineage_places_each_candidate_under_its_lineage(designs_run: dict[str, str]) -> None:
    data, _ = load_run(Path(designs_run["run"]))
    cands = data.candidates
    assert cands[designs_run["spec"]].anchor == designs_run["deltanet"]
    assert cands[designs_run["seed"]].anchor == designs_run["linear_attention"]
    pos = _layers(cands)
    x = {cid: p[0] for cid, p in pos.items()}
    d, g, lin = (x[designs_run[n]] for n in ("deltanet", "gated_deltanet", "linear_attention"))
    assert d < g < lin
    # Generation 1: the two children of deltanet centred under it (not under gated_deltanet,
    # the middle of the layer above), the two of linear_attention (a parent, a spec) under it.
    assert sorted([x[designs_run["spec"]], x[designs_run["tie_d"]]]) == [d - 0.5, d + 0.5]
    assert sorted([x[designs_run["long"]], x[designs_run["seed"]]]) == [lin - 0.5, lin + 0.5]
    # Generation 2: under gated_deltanet and under `spec`, whose own x is d - 0.5 or d + 0.5.
    assert x[designs_run["tie_g"]] == pytest.approx(g)
    assert x[designs_run["code"]] == pytest.approx(x[designs_run["spec"]])
    for gen in {p[1] for p in pos.values()}:
        xs = sorted(p[0] for p in pos.values() if p[1] == gen)
        assert all(b - a >= 1 - 1e-9 for a, b in zip(xs, xs[1:]))  # no overlaps


def test_one_damaged_file_leaves_the_run_readable(designs_run: dict[str, str], capsys,
                                                  tmp_path: Path) -> None:
    run = Path(designs_run["run"])
    store = Store.open(run)
    broken = store.candidate(designs_run["spec"]).result
    broken.write_text(broken.read_text()[:20])  # a result.json cut short
    nan = store.candidate(designs_run["tie_d"]).result
    nan.write_text('{"status": "ok", "metrics": {"bpb": NaN, "mqar_acc": 0.5}}')
    rows = {r["id"]: r for r in leaderboard(run)}
    assert rows[designs_run["spec"]]["status"] == "damaged"
    assert "result.json" in rows[designs_run["spec"]]["label"]
    assert rows[designs_run["tie_d"]]["status"] == "failed (non-finite metric)"
    assert rows[designs_run["tie_d"]]["fitness"] is None
    ranked = [r["id"] for r in leaderboard(run) if r["fitness"] is not None]
    assert designs_run["tie_d"] not in ranked and designs_run["long"] in ranked
    print_top(run)
    out = capsys.readouterr().out
    assert designs_run["long"] in out and "damaged" in out
    write_report(run, tmp_path / "report")
    assert (tmp_path / "report" / "index.html").read_text().count(designs_run["long"]) >= 1


def test_the_best_proposal_is_compared_with_the_best_baseline_on_each_axis() -> None:
    """Not only with the fitness reference: with the lowest-bpb baseline on bpb and the
    highest-recall baseline on MQAR, which may be two different baselines."""
    from evolve.views.board import versus_best_baselines

    board = [{"id": "c000009", "kind": "proposal", "label": "x", "bpb": 2.90, "mqar": 0.60},
             {"id": "c000000", "kind": "baseline", "label": "deltanet", "bpb": 3.10, "mqar": 0.65},
             {"id": "c000001", "kind": "baseline", "label": "gated_deltanet", "bpb": 2.94,
              "mqar": 0.52}]
    v = versus_best_baselines(board, board[0])
    assert v["bpb"]["baseline"] == "gated_deltanet" and v["bpb"]["better"] is True
    assert v["mqar"]["baseline"] == "deltanet" and v["mqar"]["better"] is False
    assert versus_best_baselines(board, None) == {}
