"""Whether the recall axis of fitness can tell long-range memory from a local path.

MQAR asks, at each query, for the value paired with a key seen earlier. A design with a local
path (a sliding-window softmax attention of w tokens, a short convolution of c taps) answers
from that path alone when every key lies within its reach: a stack of L such layers reaches
L * (w - 1 + c - 1) tokens back. On the tiny preset's 64-token MQAR sequences a 2-layer design
with the design space's largest window (128) sees every key, so its recall is full softmax
attention's, whatever its memory does (found in the search study, docs/RESULTS.md part 2b).
`train.mqar_task.query_gap` pushes every query at least query_gap + 2 tokens past its key.

    reach_warning(cfg.train)   # None, or a sentence naming the reach, the gap and the fix
"""

from __future__ import annotations

from typing import Any


def local_reach(num_layers: int, window: int, conv_size: int) -> int:
    """How many tokens back a stack of `num_layers` layers, each with a sliding window of
    `window` tokens (its own included) and a causal convolution of `conv_size` taps, can read."""
    return num_layers * (max(window - 1, 0) + max(conv_size - 1, 0))


def reach_warning(train_cfg: Any) -> str | None:
    """A warning when the design space's largest local window, in the MQAR model's layers,
    reaches a key from its query in train_cfg's MQAR task (None when it cannot, or when the
    config trains no MQAR track)."""
    from evolve.model.space import OPTIONS

    task, track = train_cfg.mqar_task, train_cfg.mqar
    if track is None:
        return None
    window = max(int(w) for w in OPTIONS["local_window"])
    model = track.model
    reach = local_reach(model.num_layers, window, model.conv_size)
    nearest = task.query_gap + 2  # the last key to the first query slot
    if nearest > reach:
        return None
    need = reach - 1  # query_gap + 2 > reach
    pairs = max(task.num_kv_pairs, *task.eval_num_kv_pairs)  # the longest sequence's
    return (f"recall (MQAR) cannot tell long-range memory from a local path: "
            f"{model.num_layers} layers with the design space's largest window ({window} tokens) "
            f"and conv_size {model.conv_size} reach {reach} tokens back, and train.mqar_task puts "
            f"queries {nearest} tokens after their keys at the nearest (seq_len "
            f"{task.seq_len}, query_gap {task.query_gap}): a windowed design can answer from its "
            f"window. For recall that only memory can answer, set "
            f"train.mqar_task.query_gap >= {need} and train.mqar_task.seq_len (with "
            f"train.mqar.seq_len and its model's max_seq_len) >= {4 * pairs + need - 1} at "
            f"{pairs} pairs")
