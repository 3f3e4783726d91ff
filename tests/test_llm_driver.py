"""The driver with the model in the loop: the packaged SmolLM2 served by llama.cpp on loopback
proposes (spec mode) and analyses; every call is stored with its candidate.

Marked `llm` and `slow`; fails in CI when llama-cpp-python is missing (see test_llm_server).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evolve.search.llm_roles import Agents, NoModel
from evolve.search.run_config import load_run_config
from evolve.search.driver import Driver
from evolve.state.store import Store

from test_driver import check_invariants, mini_config
from test_llm_server import require_llama_cpp


def config(tmp_path: Path, **search) -> Path:
    path = mini_config(tmp_path, **search)
    data = yaml.safe_load(path.read_text())
    data["search"]["baselines"] = ["deltanet"]
    data["llm"] = {"max_tokens": 256, "attempts": 2}
    path.write_text(yaml.safe_dump(data))
    return path


def test_llm_proposer_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load_run_config(config(tmp_path, proposer="llm", serve_local=False))
    with pytest.raises(NoModel, match="no model server answers.*serve_local is false"):
        Driver(cfg).run()
    (tmp_path / "auto").mkdir()
    auto = load_run_config(config(tmp_path / "auto", proposer="auto", serve_local=False))
    store = Store.create(auto.run_dir, {"name": "x"})
    assert Agents.start(auto, store) is None  # auto falls back to the mutator


def test_an_unreachable_endpoint_is_named(tmp_path: Path) -> None:
    path = config(tmp_path, proposer="llm", serve_local=False)
    data = yaml.safe_load(path.read_text())
    data["llm"].update(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0,
                       timeout_s=2)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(NoModel, match="127.0.0.1:9"):
        Driver(load_run_config(path)).run()


@pytest.mark.llm
@pytest.mark.slow
def test_search_with_the_local_model_proposing_and_analysing(tmp_path: Path) -> None:
    require_llama_cpp()
    cfg = load_run_config(config(tmp_path, proposer="llm", max_candidates=2, generation_size=2))
    driver = Driver(cfg)
    assert driver.run() == 0
    run = cfg.run_dir
    check_invariants(run, min_proposals=2)
    store = Store.open(run)
    events = list(store.events())
    assert any(e["event"] == "llm_ready" and "llama.cpp" in e["source"] for e in events)
    props = {p.parent.name: json.loads(p.read_text())
             for p in run.glob("candidates/*/proposal.json")}
    proposals = {cid: p for cid, p in props.items() if p["kind"] == "proposal"}
    assert len(proposals) == 2
    by_model = [cid for cid, p in proposals.items() if p["proposer"] == "llm-spec"]
    # SmolLM2 fills most slots (bench: 20/20); a slot it cannot fill says why.
    assert by_model, {cid: p.get("llm_error") for cid, p in proposals.items()}
    for cid, p in proposals.items():
        calls = sorted((run / "candidates" / cid / "llm").glob("researcher-*.json"))
        assert calls, f"{cid} has no stored researcher call"
        record = json.loads(calls[-1].read_text())
        assert record["messages"] and record["raw"]
        assert driver.agents.client.endpoint.api_key not in calls[-1].read_text()
        if p["proposer"] == "llm-spec":
            assert p["prompt_hash"] and p["model"] and p["edits"] and p["lessons_used"]
        else:
            assert p["llm_error"]
    for cid in proposals:
        analysis = json.loads((run / "candidates" / cid / "analysis.json").read_text())
        assert analysis["analyzer"] in ("llm", "rules")
        if analysis["analyzer"] == "llm":
            assert analysis["analysis"] and (run / "candidates" / cid / "llm").glob("analyzer-*")
        else:
            assert analysis["llm_error"]
    # The server the driver started is gone with it.
    assert driver.agents is not None and driver.agents.server is None


def test_the_command_line_names_the_missing_model(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = config(tmp_path, proposer="llm", serve_local=False)
    out = subprocess.run([sys.executable, "-m", "evolve.cli.main", "run", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert "search.proposer=llm but no model server answers" in out.stderr
    assert "Traceback" not in out.stderr
