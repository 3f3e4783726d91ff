"""Noise-aware confirmation, ablation, promotion and `evolve verify` on demo-size runs: real
trainings on the local executor, and the statistics they rest on."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evolve.search.run_config import FitnessConfig, load_run_config
from evolve.search.driver import Driver
from evolve.search.fitness import diff_ci
from evolve.search.followup import ablation_table, ablation_variants, confirm, nearest_baseline
from evolve.model.space import BASELINE_SPECS
from evolve.state.store import Store

from test_driver import check_invariants, mini_config

REPO = Path(__file__).resolve().parents[1]


def ok(bpb: float, mqar: float) -> dict:
    return {"status": "ok", "metrics": {"bpb": bpb, "mqar_acc": mqar}}


def test_diff_ci_is_welch_and_refuses_one_seed() -> None:
    mean, half = diff_ci([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
    assert mean == pytest.approx(1.5)
    # se^2 = 1/3 + 0.25/3; Welch df = 2.94 -> 2 (rounded down) -> t = 4.303
    assert half == pytest.approx(4.303 * math.sqrt(1 / 3 + 0.25 / 3))
    assert math.isnan(diff_ci([1.0], [0.0, 1.0])[1])


def test_confirm_keeps_a_claim_only_when_the_interval_excludes_zero() -> None:
    cfg = FitnessConfig()
    ref = [ok(2.70, 0.99), ok(2.72, 0.99), ok(2.74, 0.99)]
    clear = confirm([ok(2.60, 0.99), ok(2.61, 0.99), ok(2.62, 0.99)], ref, cfg)
    assert clear["better"] and not clear["worse"]
    assert clear["delta_bpb"]["mean"] == pytest.approx(0.11)
    noisy = confirm([ok(2.60, 0.99), ok(2.80, 0.99), ok(2.70, 0.99)], ref, cfg)
    assert noisy["fitness"]["mean"] > 0 and not noisy["better"]  # a lucky first seed
    one_seed = confirm([ok(2.0, 1.0)], ref, cfg)
    assert not one_seed["better"]  # no interval from one seed: not confirmed


def test_ablation_variants_revert_one_field_each() -> None:
    base = BASELINE_SPECS["deltanet"]
    # Two changes that matter, and one (decay_param) that is inert without a decay: a spec is
    # canonical, so the inert change is reset on construction and is no difference to ablate.
    child = base.replace(out_gate="silu", beta="sigmoid2", decay_param="logsigmoid")
    assert child.decay_param == base.decay_param
    name, diffs = nearest_baseline(child, BASELINE_SPECS)
    assert name == "deltanet" and set(diffs) == {"out_gate", "beta"}
    variants = {f: (v, note) for f, v, note in ablation_variants(child, base)}
    assert set(variants) == {"out_gate", "beta"}
    assert variants["out_gate"] == (child.replace(out_gate="none"), "")
    assert variants["beta"] == (child.replace(beta="sigmoid"), "")


def test_ablation_table_reports_each_fields_contribution() -> None:
    ref = [ok(2.7, 0.9), ok(2.7, 0.9)]
    full = [ok(2.5, 0.9), ok(2.52, 0.9)]
    rows = ablation_table(full, {"a": [ok(2.7, 0.9), ok(2.72, 0.9)],
                                 "b": [ok(2.5, 0.9), {"status": "failed"}]}, ref, FitnessConfig())
    a, b = rows
    assert a["contribution_delta_bpb"]["mean"] == pytest.approx(0.2)
    assert b["failed"] == 1 and b["seeds"] == 1


def run_cfg(tmp_path: Path, **search) -> Path:
    path = mini_config(tmp_path, **search)
    data = yaml.safe_load(path.read_text())
    data["search"]["baselines"] = ["deltanet"]
    # Make the one-seed claim easy (any candidate counts) so that confirmation happens.
    data["fitness"] = {"reference": "deltanet", "bpb_weight": 1.0, "mqar_weight": 0.0}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_confirmation_and_ablation_in_a_real_run(tmp_path: Path) -> None:
    cfg = load_run_config(run_cfg(tmp_path, max_candidates=3, generation_size=3,
                                  confirm_top=3, confirm_seeds=2, ablate_best=True))
    assert Driver(cfg).run() == 0
    run = cfg.run_dir
    check_invariants(run, min_proposals=3)
    store = Store.open(run)
    props = {p.parent.name: json.loads(p.read_text()) for p in run.glob("candidates/*/proposal.json")}
    kinds = [p["kind"] for p in props.values()]
    # The reference baseline now has 2 seeds; every claim (fitness > 0) got a replica.
    assert sorted(p["seed"] for p in props.values() if p["kind"] == "baseline") == [0, 1]
    state = store.replay()
    claims = [cid for cid, p in props.items() if p["kind"] == "proposal"
              and state.candidates[cid].fitness is not None and state.candidates[cid].fitness > 0]
    replicas = {p["of"] for p in props.values() if p["kind"] == "replica"}
    assert set(claims) <= replicas
    confirmed = [e for e in store.events() if e.get("event") == "confirmed"]
    assert {e["candidate"] for e in confirmed} >= set(claims)
    for e in confirmed:
        verdict = json.loads((store.candidate(e["candidate"]).dir / "confirmation.json").read_text())
        assert verdict["seeds"] == 2 and verdict["reference_seeds"] == 2
        assert verdict["better"] == (verdict["fitness"]["mean"] - verdict["fitness"]["ci95"] > 0)
    # Ablation: the best candidate's differing fields reverted one at a time, 2 seeds each;
    # the best confirmed one, or with none confirmed the best by mean fitness (and it says so).
    ablation = json.loads((run / "ablation.json").read_text())
    assert ablation["complete"], ablation
    latest = {e["candidate"]: e for e in confirmed}
    better = sorted((e["mean"], c) for c, e in latest.items() if e["better"])
    if better:
        assert ablation["chosen"].startswith("the best candidate confirmed")
        assert ablation["candidate"] == better[-1][1]
    else:
        assert "none was confirmed better" in ablation["chosen"]
    trained = [p for p in props.values() if p["kind"] == "ablation"]
    planned = [row for row in ablation["plan"] if not row["note"]]
    assert len(trained) == 2 * len(planned)
    assert [row["field"] for row in ablation["table"]] == sorted({p["revert"] for p in trained},
                                                                 key=[r["field"] for r in planned].index)
    assert "ablation" in kinds
    # A second start does nothing: everything is settled, nothing is trained twice.
    events = len(list(store.events()))
    assert Driver(load_run_config(run_cfg(tmp_path, max_candidates=3, generation_size=3,
                                          confirm_top=3, confirm_seeds=2,
                                          ablate_best=True))).run() == 0
    new = [e["event"] for e in list(store.events())[events:]]
    assert "submitted" not in new and "proposed" not in new


@pytest.mark.slow
def test_verify_command_and_promotion(tmp_path: Path) -> None:
    path = run_cfg(tmp_path, max_candidates=1, generation_size=1)
    data = yaml.safe_load(path.read_text())
    # Promotion to a preset: `tiny` with this run's short budgets, so the test stays small.
    data["search"]["promote"] = {"top": 1, "preset": "tiny", "train": data["train"]}
    path.write_text(yaml.safe_dump(data))
    cfg = load_run_config(path)
    assert Driver(cfg).run() == 0
    store = Store.open(cfg.run_dir)
    props = {p.parent.name: json.loads(p.read_text())
             for p in cfg.run_dir.glob("candidates/*/proposal.json")}
    promoted = [p for p in props.values() if p.get("preset") == "tiny"]
    assert {p["kind"] for p in promoted} == {"replica", "baseline"}
    assert any(e.get("event") == "confirmed" and e.get("preset") == "tiny"
               for e in store.events())
    # `evolve verify RUN ID --seeds 2`: no driver runs, so the command runs it to completion.
    proposal = next(cid for cid, p in props.items() if p["kind"] == "proposal")
    out = subprocess.run([sys.executable, "-m", "evolve.cli.main", "verify", str(cfg.run_dir),
                          proposal, "--seeds", "2", "--ablate"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr
    verdict = json.loads((store.candidate(proposal).dir / "confirmation.json").read_text())
    assert verdict["seeds"] == 2
    assert proposal in out.stdout
    ablation = json.loads((cfg.run_dir / "ablation.json").read_text())
    assert ablation["candidate"] == proposal and ablation["complete"]
    assert ablation["chosen"] == "named in the ablation file (`evolve verify --ablate`)"
    assert len(ablation["table"]) == sum(1 for row in ablation["plan"] if not row["note"])
    assert all(f"without its {row['field']} change" in out.stdout for row in ablation["table"])
    bad = subprocess.run([sys.executable, "-m", "evolve.cli.main", "verify", str(cfg.run_dir),
                          "c999999"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "c999999" in bad.stderr
    # A STOP file left in the run stops the command's driver: it says so and how to go on.
    (cfg.run_dir / "STOP").touch()
    stopped = subprocess.run([sys.executable, "-m", "evolve.cli.main", "verify", str(cfg.run_dir),
                              proposal, "--seeds", "3"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=900)
    assert stopped.returncode == 1
    assert f"stopped early: STOP file {cfg.run_dir / 'STOP'}; remove it" in stopped.stderr
    (cfg.run_dir / "STOP").unlink()
    # A run the command's driver refuses to resume queues nothing for a later driver.
    requests = sorted((cfg.run_dir / "requests").iterdir())
    frozen = yaml.safe_load((cfg.run_dir / "run.yaml").read_text())
    frozen["search"]["max_candidates"] = "many"
    (cfg.run_dir / "run.yaml").write_text(yaml.safe_dump(frozen))
    refused = subprocess.run([sys.executable, "-m", "evolve.cli.main", "verify", str(cfg.run_dir),
                              proposal, "--seeds", "4"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=900)
    assert refused.returncode == 2 and "search.max_candidates" in refused.stderr
    assert sorted((cfg.run_dir / "requests").iterdir()) == requests
    frozen["search"]["max_candidates"] = 1
    (cfg.run_dir / "run.yaml").write_text(yaml.safe_dump(frozen))
    check_invariants(cfg.run_dir, min_proposals=1)


def test_fitness_at_a_harder_pair_count() -> None:
    from evolve.search.fitness import Reference, fitness

    def res(acc8: float, acc16: float) -> dict:
        return {"status": "ok", "metrics": {"bpb": 2.7, "mqar_acc": acc8,
                                            "mqar_acc_by_pairs": {"8": acc8, "16": acc16}}}

    cfg = FitnessConfig(mqar_pairs=16, bpb_weight=0.0)
    ref = Reference.from_results([res(1.0, 0.6)], "deltanet", 16)
    assert fitness(res(1.0, 0.9), ref, cfg)["delta_mqar"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="evaluated at 8, 16 pairs.*eval_num_kv_pairs"):
        fitness(res(1.0, 0.9), ref, FitnessConfig(mqar_pairs=32))


def test_versus_another_baseline() -> None:
    from evolve.search.followup import versus

    ref = [ok(2.70, 0.9), ok(2.72, 0.9)]
    gdn = [ok(2.62, 0.9), ok(2.63, 0.9), ok(2.64, 0.9)]
    cand = [ok(2.50, 0.9), ok(2.51, 0.9), ok(2.52, 0.9)]
    out = versus(cand, gdn, ref, FitnessConfig())
    assert out["fitness"]["mean"] == pytest.approx(0.12) and out["better"]
    assert not versus(gdn, gdn, ref, FitnessConfig())["better"]
