"""Designs from files (issue 17): a `file:` entry of search.seed_designs and `evolve import`
enter a run through the same adapter and the driver's own novelty check.

The designs are ASI-Arch's published fla layers (tests/fixtures/asi_arch), written to real files
and loaded through real run files; the runs train for real (the debug executor, in-process).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evolve.cli.main import main
from evolve.config.loading import ConfigError
from evolve.model.fla_adapter import adapt
from evolve.search.driver import Driver
from evolve.search.run_config import load_run_config
from evolve.search.seed_designs import SEED_PROPOSER
from evolve.state.fsio import read_json
from evolve.state.store import Store
from test_driver import mini_config
from test_fla_adapter import DESIGNS, FAST, GATE_FAILING, _design_file, _run

PASSING = "delta_net_mor"  # passes every gate at the tiny preset (test_fla_adapter.BEST_VERDICTS)
SPEC = {"base": "gated_deltanet", "value_ratio": 2}


def _run_file(tmp_path: Path, seed_designs: list, **search) -> Path:
    """mini_config with `seed_designs`, the fast gate settings, and the run file in its own
    folder (so that relative design paths resolve against it, not the working directory)."""
    path = mini_config(tmp_path, seed_designs=seed_designs, **search)
    data = {**yaml.safe_load(path.read_text()), **FAST}
    run_file = tmp_path / "runs" / "mini.yaml"
    run_file.parent.mkdir(exist_ok=True)
    run_file.write_text(yaml.safe_dump(data))
    return run_file


def _write(tmp_path: Path, relative: str, text: str) -> Path:
    path = tmp_path / "runs" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


TWO_LAYERS = DESIGNS[GATE_FAILING]["program"] + "\n\nclass Other(DeltaNet):\n" \
    "    def __init__(self, hidden_size=64, **kw):\n" \
    "        super().__init__(hidden_size=hidden_size, **kw)\n\n" \
    "    def forward(self, hidden_states, attention_mask=None, **kw):\n" \
    "        return super().forward(hidden_states, attention_mask, **kw)\n"


@pytest.mark.parametrize("entry,files,message", [
    ({"file": "designs/missing.py"}, {},
     r"seed_designs\[2\]: \S*missing\.py: no such file; expected a Python file holding an "
     r"fla-style layer"),
    ({"file": "designs/notes.py"}, {"designs/notes.py": "x = 1\n"},
     r"seed_designs\[2\]: \S*notes\.py: no fla-style layer \(no class\); expected an fla-style "
     r"layer"),
    ({"file": "designs/two.py"}, {"designs/two.py": TWO_LAYERS},
     r"seed_designs\[2\]: \S*two\.py: 2 classes have fla's layer interface \(DeltaNet, Other\); "
     r"name the one to import \(evolve import --layer CLASS; `layer:` in a seed design\)"),
    ({"file": "designs/two.py", "layer": "Nope"}, {"designs/two.py": TWO_LAYERS},
     r"seed_designs\[2\]: \S*two\.py: class 'Nope' is not defined; layers found: DeltaNet, Other"),
    ({"file": "designs/two.py", "lyer": "Other"}, {"designs/two.py": TWO_LAYERS},
     r"seed_designs\[2\] \(\S*two\.py\): unknown key\(s\) 'lyer'; valid keys of a design file: "
     r"file, name, layer, motivation"),
    ({"file": "designs/two.py", "base": "deltanet", "value_ratio": 2},
     {"designs/two.py": TWO_LAYERS},
     r"seed_designs\[2\] \(\S*two\.py\): `file` cannot be combined with spec fields \('base', "
     r"'value_ratio'\); a design file takes file, name, layer, motivation"),
    ({"file": "designs/two.py", "layer": ["Other"]}, {"designs/two.py": TWO_LAYERS},
     r"seed_designs\[2\]\.layer \(\S*two\.py\) is \['Other'\]; expected a string"),
])
def test_a_bad_design_file_is_refused_when_the_run_file_loads(tmp_path: Path, entry, files,
                                                               message) -> None:
    # Two good entries first, so that the error must name the right one.
    good = _write(tmp_path, "designs/good.py", DESIGNS[GATE_FAILING]["program"])
    for relative, text in files.items():
        _write(tmp_path, relative, text)
    path = _run_file(tmp_path, [SPEC, {"file": str(good.relative_to(tmp_path / "runs"))}, entry])
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config(path)
    assert str(path) in str(err.value)  # the run file is named too
    assert "\n" not in str(err.value)


def test_the_good_entries_load_with_their_files_frozen_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _write(tmp_path, "designs/good.py", DESIGNS[GATE_FAILING]["program"])
    path = _run_file(tmp_path, [SPEC, {"file": "designs/good.py", "name": "rmsgm"}])
    monkeypatch.chdir(tmp_path)  # not the run file's folder: the path resolves against that
    cfg = load_run_config(path)
    assert cfg.search.seed_designs[1] == {"file": str(good.resolve()), "name": "rmsgm"}
    Driver(cfg)  # creates the run and freezes its config
    frozen = yaml.safe_load((cfg.run_dir / "run.yaml").read_text())
    assert frozen["search"]["seed_designs"][1]["file"] == str(good.resolve())


def _by_seed_design(store: Store) -> dict[int, str]:
    state = store.replay()
    return {read_json(store.candidate(c).proposal)["seed_design"]: c for c in state.candidates
            if "seed_design" in read_json(store.candidate(c).proposal)}


def test_a_design_file_is_gated_trained_in_generation_one_and_made_once(tmp_path: Path) -> None:
    mor = _write(tmp_path, "designs/mor.py", DESIGNS[PASSING]["program"])
    _write(tmp_path, "designs/rmsgm.py", DESIGNS[GATE_FAILING]["program"])
    path = _run_file(tmp_path, [
        {"file": "designs/mor.py", "name": "mor", "motivation": "ASI-Arch's best, re-measured"},
        {"file": "designs/rmsgm.py"},
        {"file": str(mor)}],  # the same file again: its code is in the run, so it is refused
        executor="debug", max_candidates=1)
    cfg = load_run_config(path)
    driver = Driver(cfg)
    assert driver.run() == 0 and driver.stop_reason == "complete"
    store = Store.open(cfg.run_dir)
    state = store.replay()
    seeds = _by_seed_design(store)
    assert set(seeds) == {0, 1}
    first, rejected = state.candidates[seeds[0]], state.candidates[seeds[1]]
    assert first.generation == 1 and first.status == "analyzed" and first.fitness is not None
    assert rejected.generation == 1 and rejected.status == "rejected" and "__all__" in \
        rejected.error
    # What the candidate folder holds (in the run's state folder) is the adapter's output.
    folder = store.candidate(first.id).dir
    assert folder.resolve().is_relative_to(cfg.run_dir.resolve())
    assert (folder / "mixer.py").read_text() == adapt(DESIGNS[PASSING]["program"]).code
    proposal = read_json(store.candidate(first.id).proposal)
    assert proposal["proposer"] == SEED_PROPOSER and proposal["name"] == "mor"
    assert proposal["source"] == str(mor.resolve()) and proposal["layer"] == "DeltaNet"
    assert proposal["motivation"] == "ASI-Arch's best, re-measured"
    assert proposal["novelty"]["kind"] == "novel"
    refused = [e for e in store.events() if e.get("event") == "duplicate_rejected"]
    assert [(e["nearest"], e["seed_design"]) for e in refused] == [(first.id, 2)]

    # A restart (the run file loaded again) creates no second copy of any seed design, and
    # does not screen the refused one again: the journal names the entry it refused.
    before = len(list(store.events()))
    assert Driver(load_run_config(path)).run() == 0
    resumed = list(Store.open(cfg.run_dir).events())[before:]
    assert resumed and not [e for e in resumed if e["event"] in ("created",
                                                                 "duplicate_rejected")]
    assert _by_seed_design(Store.open(cfg.run_dir)) == seeds


def test_an_exact_duplicate_import_is_refused_naming_the_existing_candidate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path)
    path = _design_file(tmp_path, GATE_FAILING)
    assert main(["import", str(path), "--run", str(run), "--name", "rmsgm"]) == 1  # rejected
    capsys.readouterr()
    (first,) = Store.open(run).replay().candidates
    # The same code with other comments and layout, from another file, is the same design.
    restyled = tmp_path / "elsewhere" / "restyled.py"
    restyled.parent.mkdir()
    restyled.write_text("# my copy\n" + DESIGNS[GATE_FAILING]["program"].replace("\n\n\n", "\n\n"))
    for again in (path, restyled):
        assert main(["import", str(again), "--run", str(run)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"evolve import: refused: {again.resolve()}: the same code as "
                              f"{first} (rmsgm), already in this run"), err
    store = Store.open(run)
    assert list(store.replay().candidates) == [first]
    refused = [e for e in store.events() if e.get("event") == "duplicate_rejected"]
    assert [e["nearest"] for e in refused] == [first, first]


def test_a_near_duplicate_import_is_labelled_and_its_nearest_printed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path)
    program = DESIGNS[GATE_FAILING]["program"]
    # Two files of one name (so one motivation, the idea the similarity compares) whose code
    # differs: not a duplicate, but as close an idea as can be.
    paths = []
    for folder, code in (("a", program), ("b", program + "\nVARIANT = 2\n")):
        paths.append(tmp_path / folder / "layer.py")
        paths[-1].parent.mkdir()
        paths[-1].write_text(code)
    assert main(["import", str(paths[0]), "--run", str(run)]) == 1  # the imports gate
    capsys.readouterr()
    assert main(["import", str(paths[1]), "--run", str(run)]) == 1
    err = capsys.readouterr().err
    store = Store.open(run)
    first, second = store.replay().candidates
    assert f"evolve import: {second} (layer) is a near-duplicate of {first} (layer): " \
           "similarity 1.000 >= novelty.similarity_threshold 0.92; imported" in err, err
    novelty = read_json(store.candidate(second).proposal)["novelty"]
    assert novelty["kind"] == "near_duplicate" and novelty["nearest"] == first
    assert novelty["similarity"] == pytest.approx(1.0)
    assert read_json(store.candidate(first).proposal)["novelty"]["kind"] == "novel"
