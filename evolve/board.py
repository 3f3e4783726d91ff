"""Read-only views of a run: status, leaderboard, one candidate. No locks are taken, so they
work from any node while the driver runs (every file they read is replaced atomically).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from evolve.fsio import read_json
from evolve.store import Store


def _open(run: Path) -> Store:
    return Store.open(run)


def leaderboard(run: Path) -> list[dict[str, Any]]:
    """Every trained candidate with its metrics, best fitness first."""
    store = _open(run)
    state = store.replay()
    rows = []
    for c in state.candidates.values():
        paths = store.candidate(c.id)
        prop = read_json(paths.proposal, {}) or {}
        result = read_json(paths.result, None)
        if result is None:
            continue
        m = result.get("metrics", {})
        label = prop.get("name") or prop.get("motivation", "")[:60]
        rows.append({"id": c.id, "kind": prop.get("kind", "proposal"), "label": label,
                     "status": c.status, "fitness": c.fitness, "bpb": m.get("bpb"),
                     "mqar": m.get("mqar_acc"), "bench": m.get("benchmark_avg"),
                     "tokens_per_s": m.get("tokens_per_s"), "parents": c.parents,
                     "generation": c.generation})
    rows.sort(key=lambda r: (r["fitness"] is None, -(r["fitness"] or 0.0)))
    return rows


def status(run: Path) -> dict[str, Any]:
    store = _open(run)
    state = store.replay()
    by_status = Counter(c.status for c in state.candidates.values())
    events = list(store.events())
    last_start = next((e for e in reversed(events) if e.get("event") == "driver_start"), None)
    last_stop = next((e for e in reversed(events) if e.get("event") == "driver_stop"), None)
    running = last_start is not None and (last_stop is None or last_stop["t"] < last_start["t"])
    board = leaderboard(run)
    best = next((r for r in board if r["kind"] == "proposal" and r["fitness"] is not None), None)
    return {"run": str(run), "candidates": len(state.candidates), "by_status": dict(by_status),
            "generations": max((c.generation or 0 for c in state.candidates.values()), default=0),
            "in_flight": by_status.get("submitted", 0) + by_status.get("running", 0),
            "gpu_hours": round(sum(c.gpu_hours for c in state.candidates.values()), 4),
            "driver": "running" if running else
            f"stopped ({last_stop.get('reason')})" if last_stop else "never started",
            "best": best}


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_status(run: Path, as_json: bool = False) -> int:
    s = status(run)
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"run {s['run']}: driver {s['driver']}")
    print(f"  candidates {s['candidates']} in {s['generations']} generations; in flight "
          f"{s['in_flight']}; GPU-hours {s['gpu_hours']}")
    print("  by status: " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_status"].items())))
    if s["best"]:
        b = s["best"]
        print(f"  best proposal: {b['id']} fitness {_fmt(b['fitness'], '+.4f')} "
              f"(bpb {_fmt(b['bpb'], '.4f')}, MQAR {_fmt(b['mqar'], '.3f')})")
    return 0


def print_top(run: Path, limit: int = 20, as_json: bool = False) -> int:
    rows = leaderboard(run)[:limit]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("rank", "id", "kind", "fitness", "bpb", "MQAR", "tok/s", "what")
    table = [(str(i + 1), r["id"], r["kind"], _fmt(r["fitness"], "+.4f"), _fmt(r["bpb"], ".4f"),
              _fmt(r["mqar"], ".3f"), _fmt(r["tokens_per_s"], ",.0f"), r["label"])
             for i, r in enumerate(rows)]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"leaderboard: {run}")
        for h in head:
            t.add_column(h)
        for row in table:
            t.add_row(*row)
        Console().print(t)
    else:
        widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h)
                  for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


def print_candidate(run: Path, cid: str, as_json: bool = False) -> int:
    store = _open(run)
    state = store.replay()
    if cid not in state.candidates:
        known = ", ".join(list(state.candidates)[-5:])
        raise ValueError(f"{run}: no candidate {cid!r} (latest: {known})")
    paths = store.candidate(cid)
    info = {"id": cid, "status": state.candidates[cid].status,
            "fitness": state.candidates[cid].fitness,
            "parents": state.candidates[cid].parents,
            "proposal": read_json(paths.proposal, None), "checks": read_json(paths.checks, None),
            "result": read_json(paths.result, None), "analysis": read_json(paths.analysis, None),
            "error": read_json(paths.error, None)}
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    prop = info["proposal"] or {}
    print(f"{cid}: {info['status']}, fitness {_fmt(info['fitness'], '+.4f')}, parents "
          f"{', '.join(info['parents']) or '-'}")
    print(f"motivation: {prop.get('motivation', '-')}")
    if info["checks"]:
        print(f"checks: {'passed' if info['checks']['passed'] else 'failed at ' + str(info['checks']['failed_gate'])}")
    if info["result"]:
        print("metrics: " + json.dumps(info["result"].get("metrics", {})))
    if info["analysis"]:
        print(f"analysis: {info['analysis'].get('analysis')}")
    if paths.mixer.exists():
        print("--- mixer.py ---")
        print(paths.mixer.read_text())
    return 0
