"""`evolve verify` requests: the one protocol between the CLI, which queues them, and the
driver, which acts on them (replicas with more seeds, a promotion preset, an ablation).

    path = queue_request(store, candidate="c000042", seeds=5, preset=None, ablate=False)
    for req in pending_requests(store): ...; settle(req, accepted=True)

A request is one JSON file in the run's requests folder; once the driver has created its candidates it is
renamed *.done (or *.refused, with a `request_refused` journal event), so it acts once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from evolve.state.fsio import StateError, atomic_write_json, read_json
from evolve.state.layout import RunLayout


@dataclass(frozen=True)
class VerifyRequest:
    """One queued `evolve verify`."""

    path: Path
    """Its file in the run's requests folder."""
    candidate: str | None
    """The trained candidate to verify."""
    seeds: int = 1
    """How many seeds it should have in all (its own included)."""
    preset: str | None = None
    """Train it again at this preset (a promotion); None: at the run's own training."""
    ablate: bool = False
    """Also ablate it: each change from its nearest baseline reverted in turn."""


def queue_request(layout: RunLayout, *, candidate: str, seeds: int, preset: str | None,
                  ablate: bool) -> Path:
    """Write a request for the driver; returns its file."""
    path = layout.request_path(f"{time.strftime('%Y%m%d-%H%M%S')}-{candidate}")
    path.parent.mkdir(exist_ok=True)
    atomic_write_json(path, {"candidate": candidate, "seeds": seeds, "preset": preset,
                             "ablate": ablate})
    return path


def pending_requests(layout: RunLayout) -> list[VerifyRequest]:
    """Requests not yet acted on, oldest first. An unreadable one is returned with no
    candidate, so that the driver refuses it (with a journal event) instead of stopping."""
    folder = layout.requests_dir
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = read_json(path, None)
        except StateError:
            data = None
        data = data if isinstance(data, dict) else {}
        try:
            seeds = int(data.get("seeds", 1))
        except (TypeError, ValueError):
            seeds = 1
        out.append(VerifyRequest(path=path, candidate=data.get("candidate"), seeds=seeds,
                                 preset=data.get("preset") or None,
                                 ablate=bool(data.get("ablate"))))
    return out


def settle(request: VerifyRequest, *, accepted: bool) -> None:
    """Mark a request as acted on (.done) or refused (.refused)."""
    request.path.rename(request.path.with_suffix(".done" if accepted else ".refused"))
