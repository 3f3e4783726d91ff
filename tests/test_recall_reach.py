"""The recall axis of fitness against the design space's local paths
(evolve/search/recall_reach.py): the tiny preset's MQAR lets the largest window answer from its
window; a run file whose query_gap puts every query past the reach gets no warning (the task's
layout is tested in tests/test_data.py::test_mqar_structure)."""

from __future__ import annotations

from pathlib import Path

from evolve.search.recall_reach import local_reach, reach_warning
from evolve.search.run_config import load_run_config
from evolve.train.presets import preset


def test_local_reach_counts_every_layer() -> None:
    assert local_reach(1, 128, 0) == 127
    assert local_reach(2, 128, 4) == 2 * (127 + 3)
    assert local_reach(3, 1, 1) == 0


def test_the_tiny_preset_lets_a_window_answer_and_says_how_to_close_it() -> None:
    warning = reach_warning(preset("tiny"))
    assert warning is not None
    assert "2 layers with the design space's largest window (128 tokens) and conv_size 4 " \
           "reach 260 tokens back" in warning
    assert "queries 2 tokens after their keys at the nearest (seq_len 64, query_gap 0)" in warning
    assert "query_gap >= 259" in warning and "seq_len" in warning and ">= 322 at 16 pairs" \
        in warning


def _run_file(tmp_path: Path, gap: int) -> Path:
    path = tmp_path / f"gap{gap}.yaml"
    path.write_text(f"""name: recall
preset: tiny
train:
  mqar:
    seq_len: 322
    model:
      max_seq_len: 322
  mqar_task:
    seq_len: 322
    query_gap: {gap}
""")
    return path


def test_a_gap_past_the_reach_is_not_warned_about(tmp_path: Path) -> None:
    cfg = load_run_config(_run_file(tmp_path, 259))
    assert cfg.train.mqar_task.query_gap == 259
    assert reach_warning(cfg.train) is None
    short = load_run_config(_run_file(tmp_path, 258))
    assert "queries 260 tokens after their keys" in reach_warning(short.train)
