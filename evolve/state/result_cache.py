"""Results shared by the runs of a site, by content: no training is run twice.

    cache = ResultCache(Path("state/.result-cache"))
    key = training_key(code, train_cfg_dict, versions())   # the mixer's bytes, config, seed
    hit = cache.get(key)            # {"result": ..., "source": ...} or None
    cache.put(key, result_json, metrics_file, source="state/demo/candidates/c000004")

A CPU training is deterministic for a given mixer file, resolved training config (which holds
the seed) and library versions, so its result can stand in for a second training: the
baselines of every run, and a design re-proposed in another run, train once per site. The key
is the SHA-256 of those three; an entry is a folder named by the key, laid out as a candidate
folder (its result and its training's metrics; `CandidatePaths`), written atomically (a temporary folder renamed into place), so
two drivers filling the same key at once leave one whole entry. Entries are never changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from evolve.state.fsio import StateError, atomic_write_json, read_json
from evolve.state.layout import CandidatePaths

SOURCE_FILE = "source.json"
"""Where an entry's training ran (its candidate folder), beside the candidate-like files."""
VERSIONED = ("torch", "evolve", "numpy", "flash-linear-attention")
"""Distributions whose version is part of a training's key: a new version may change results."""


@functools.cache
def versions() -> dict[str, str]:
    """The versions of `VERSIONED` installed here ("-" for one that is not); read once per
    process (a process does not change its libraries)."""
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def training_key(code: str, train_cfg: dict[str, Any], library_versions: dict[str, str]) -> str:
    """The content address of one training: mixer file bytes, resolved config (with its seed),
    library versions."""
    blob = json.dumps({"code": hashlib.sha256(code.encode("utf-8")).hexdigest(),
                       "train": train_cfg, "versions": library_versions},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


class ResultCache:
    """A folder of finished trainings by key, shared by the runs of a site."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def entry(self, key: str) -> Path:
        if not (len(key) == 32 and all(c in "0123456789abcdef" for c in key)):
            raise ValueError(f"result cache key {key!r} is not 32 hex digits")
        return self.folder / key[:2] / key

    def get(self, key: str) -> dict[str, Any] | None:
        """{"result": the result file, "source": where it was trained, "metrics": Path | None},
        or None when the key is absent or its entry unreadable (then it is trained again)."""
        entry = CandidatePaths.of(self.entry(key))
        try:
            result = read_json(entry.result, None)
            source = read_json(entry.dir / SOURCE_FILE, None) or {}
        except StateError:
            return None
        if not isinstance(result, dict) or result.get("status") != "ok":
            return None
        return {"result": result, "source": source.get("source"),
                "metrics": entry.metrics if entry.metrics.is_file() else None}

    def put(self, key: str, result: dict[str, Any], metrics: Path | None, *, source: str) -> bool:
        """Store a successful training once; False when it was already there (or failed)."""
        if result.get("status") != "ok":
            return False
        entry = self.entry(key)
        if entry.is_dir():
            return False
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
        files = CandidatePaths.of(tmp)  # an entry is laid out as a candidate folder
        try:
            atomic_write_json(files.result, result)
            atomic_write_json(tmp / SOURCE_FILE, {"source": source, "key": key})
            if metrics is not None and metrics.is_file():
                files.train.mkdir()
                shutil.copyfile(metrics, files.metrics)
            os.rename(tmp, entry)  # atomic; fails if another writer got there first
            return True
        except OSError:
            return False
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
