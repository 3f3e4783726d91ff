"""The token budget against the corpus: a preset must not read its corpus over and over.

    check_token_budget(train_cfg)      # ConfigError naming the corpus, its tokens, the budget
                                       # and the keys to change; None when the budget fits

The explore preset's ~1B tokens read Shakespeare's 4.8M byte tokens about 200 times: a search
at that scale would measure memorisation, not language modelling. Checked by the driver before
it submits anything, and by `evolve train` before it trains.
"""

from __future__ import annotations

from typing import Any

from evolve.config.loading import ConfigError
from evolve.train.presets import TrainConfig


def check_token_budget(cfg: TrainConfig, data: Any = None) -> None:
    """Refuse an lm track whose token budget reads the training split more than
    `cfg.data.max_epochs` times; `data` is the loaded corpus, else it is loaded (prepared once
    and cached) here."""
    track = cfg.lm
    if track is None:
        return
    budget = track.total_steps() * track.batch_size * track.seq_len
    if data is None:
        from evolve.train.data import load_data

        data = load_data(cfg.data)
    train_tokens = len(data.train)
    epochs = budget / max(1, train_tokens)
    if epochs <= cfg.data.max_epochs:
        return
    raise ConfigError(
        f"the lm track's budget of {budget:,} tokens ({track.total_steps():,} steps x "
        f"{track.batch_size} x {track.seq_len}) would read corpus {cfg.data.corpus!r} "
        f"({train_tokens:,} training tokens, {data.tokenizer.name}) {epochs:,.1f} times; at most "
        f"data.max_epochs={cfg.data.max_epochs:g} is allowed. Name a larger corpus "
        f"(train.data.corpus: a folder of text, JSONL, parquet, a save_to_disk folder, or "
        f"hf:<name> from a datasets cache), or lower train.lm.max_tokens / train.lm.max_steps, "
        f"or raise train.data.max_epochs")
