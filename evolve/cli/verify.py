"""`evolve verify RUN ID [--seeds N] [--preset P] [--ablate] [--no-wait]`: re-train a candidate
with more seeds (or at a larger preset) and say whether it is better than the reference.

The request is queued for the driver (evolve.state.requests). With a driver running, it picks
the request up; otherwise this command runs the driver until the verdict is in.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from evolve.config.loading import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evolve verify",
                                description="Re-train a candidate with more seeds or at a larger "
                                "preset, and say whether it is better than the reference.")
    p.add_argument("run", help="run folder")
    p.add_argument("id", help="candidate id, e.g. c000042")
    p.add_argument("--seeds", type=int, default=3, help="seeds in all (default 3)")
    p.add_argument("--preset", default=None,
                   help="train at this preset instead of the run's (explore, verify)")
    p.add_argument("--ablate", action="store_true",
                   help="also revert each of its design choices to its nearest baseline, one "
                        "at a time, with the same seeds (the run's ablation file; one per run)")
    p.add_argument("--no-wait", action="store_true",
                   help="only queue the request (a running driver picks it up)")
    return p


def main_verify(argv: list[str]) -> int:
    from evolve.search.driver import Driver
    from evolve.search.run_config import run_config_from_dict
    from evolve.state.journal import TRAINED
    from evolve.state.requests import queue_request
    from evolve.state.store import Store
    from evolve.train.presets import PRESETS

    args = parser().parse_args(argv)
    if args.seeds < 1:
        raise ConfigError(f"--seeds={args.seeds} must be >= 1")
    if args.preset is not None and args.preset not in PRESETS:
        raise ConfigError(f"--preset={args.preset!r} is not valid; choose one of: "
                          f"{', '.join(PRESETS)}")
    store = Store.open(args.run)
    state = store.replay()
    cand = state.candidates.get(args.id)
    if cand is None or cand.status not in TRAINED:
        trained = [c.id for c in state.candidates.values() if c.status in TRAINED]
        what = "is not in this run" if cand is None else f"is {cand.status}, not trained"
        print(f"evolve verify: {args.id} {what}; trained candidates: "
              f"{', '.join(trained[-10:]) or 'none yet'}", file=sys.stderr)
        return 2
    driver_running = store.driver_holder() is not None
    driver = None
    if not driver_running and not args.no_wait:
        # Built before the request is queued: a run this driver refuses (e.g. a changed config)
        # must not leave a request behind for a later driver to act on.
        cfg = run_config_from_dict(store.config(), source=str(store.run_yaml))
        cfg.root, cfg.name = str(store.root.parent), store.root.name
        driver = Driver(cfg)
    request = queue_request(store, candidate=args.id, seeds=args.seeds, preset=args.preset,
                            ablate=args.ablate)
    if driver_running:
        print(f"evolve verify: queued {request.name}; the running driver picks it up")
        return 0
    if driver is None:
        print(f"evolve verify: queued {request.name}; `evolve run` on the run file trains it")
        return 0
    driver.run()
    return _print_verdict(driver, args)


def _print_verdict(driver: Any, args: argparse.Namespace) -> int:
    view = driver.view
    verdict = view.confirmations(args.id).get(args.preset)
    if verdict is not None and driver.stop_reason != "complete" \
            and int(verdict.get("seeds") or 0) < args.seeds:
        verdict = None  # an earlier request's verdict, on fewer seeds than asked for now
    if verdict is None:
        why = driver.stop_reason or "unknown"
        if why.startswith("STOP file"):  # left by an earlier `touch RUN/STOP`
            why = f"STOP file {view.store.stop_path}; remove it and run the same command again"
        print(f"evolve verify: {args.id}: no verdict yet (the driver stopped early: {why})",
              file=sys.stderr)
        return 1
    f = verdict.get("fitness") or {}
    word = "better than" if verdict["better"] else ("worse than" if verdict["worse"] else
                                                    "not distinguishable from")
    print(f"{args.id}: {word} {verdict['reference']} over {verdict['seeds']} seeds "
          f"(fitness {f.get('mean', float('nan')):+.4f} ± {f.get('ci95', float('nan')):.4f}, "
          f"95% interval; {verdict['reference_seeds']} reference seeds)")
    ablation = view.ablation()
    if args.ablate and ablation and ablation.get("table"):
        for row in ablation["table"]:
            c = row.get("contribution_fitness") or {}
            print(f"  without its {row['field']} change: fitness "
                  f"{(row.get('fitness') or {}).get('mean', float('nan')):+.4f}; the change "
                  f"contributes {c.get('mean', float('nan')):+.4f} ± "
                  f"{c.get('ci95', float('nan')):.4f}")
    return 0
