"""Proxy validity: train the baselines with several seeds and report means, 95% intervals,
the seed-to-seed noise floor and MQAR solve rates, as a table, JSON and Markdown.

    .venv/bin/python tools/study/proxy.py --seeds 5 --workers 2 --out bench-out/proxy
    .venv/bin/python tools/study/proxy.py --mixers deltanet,linear_attention --seeds 3 \
        --config my_overrides.yaml --tracks mqar
    # the study budget (the searches' trainings), all nine baselines, results committed:
    .venv/bin/python tools/study/proxy.py --mixers all --seeds 5 \
        --config tools/study/study-budget.yaml --train-pairs 16 --out bench-out/proxy-study \
        --record docs/results/proxy-study
    .venv/bin/python tools/study/proxy.py --summarize-only --record docs/results/proxy-study \
        --mixers all --seeds 5 --train-pairs 16 --out bench-out/proxy-study

Each training is one `evolve train --no-check` subprocess (one torch thread each, `--workers`
at once); finished trainings are skipped on a rerun, so the study resumes after an
interruption. A mixer is a baseline name or a mixer file (named by its stem). With --record,
each training's few numbers (metrics, seed, cost, library versions) go to <record>/<name>-s<seed>.json,
small enough to commit; --summarize-only rebuilds the tables from those files alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from evolve.search.fitness import diff_ci, mean_ci
from evolve.state.layout import CandidatePaths

BASELINES = ("softmax", "gated_deltanet", "deltanet", "gla", "linear_attention")
"""The default --mixers (the first five); `--mixers all` is every baseline of the package."""
SOLVED = 0.9
"""MQAR counts as solved by a seed when its accuracy at the training pair count reaches this."""
RECORD_KEYS = ("mixer", "seed", "status", "reason", "metrics", "wall_s", "cpu_s",
               "torch_threads", "versions", "host")
"""What --record keeps of a result file (the curves and the full config stay in --out)."""


def name_of(mixer: str) -> str:
    """A mixer's name in the tables: a baseline's name, or a mixer file's stem."""
    return Path(mixer).stem if mixer.endswith(".py") else mixer


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95% interval of a rate (a solve rate over seeds is binomial: each seed solves
    MQAR or does not, so a mean with a t interval misdescribes it)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean, standard deviation and the half-width of the 95% interval of the mean."""
    mean, half = mean_ci(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, sd, half


def run_one(mixer: str, seed: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    folder = out / f"{name_of(mixer)}-s{seed}"
    result_file = CandidatePaths.of(folder).result
    if result_file.exists():
        result = json.loads(result_file.read_text())
        if result.get("status") == "ok":
            return result
    # --no-check: the baselines' gates are checked by the tests (tests/test_gates.py), and a
    # check here would take a training slot's time.
    cmd = [sys.executable, "-m", "evolve.cli.main", "train", "--no-check", "--mixer", mixer,
           "--preset", args.preset, "--seed", str(seed), "--out", str(folder), "--json"]
    if args.config:
        cmd += ["--config", args.config]
    if args.tracks:
        cmd += ["--tracks", args.tracks]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if not result_file.exists():
        raise RuntimeError(f"{mixer} seed {seed} wrote no result:\n{proc.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    print(f"{mixer:>18} seed {seed}: {result['status']:6} in {time.time() - t0:5.0f} s  "
          f"bpb={result['metrics'].get('bpb')}  mqar={result['metrics'].get('mqar_acc_by_pairs')}",
          flush=True)
    return result


def summarize(results: dict[str, list[dict[str, Any]]], train_pairs: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for mixer, runs in results.items():
        ok = [r for r in runs if r["status"] == "ok"]
        row: dict[str, Any] = {"seeds": len(runs), "ok": len(ok)}
        bpb = [r["metrics"]["bpb"] for r in ok if r["metrics"].get("bpb") is not None]
        if bpb:
            row["bpb"] = dict(zip(("mean", "sd", "ci95"), ci95(bpb)), values=bpb)
        by_pairs: dict[str, list[float]] = {}
        for r in ok:
            for pairs, acc in (r["metrics"].get("mqar_acc_by_pairs") or {}).items():
                by_pairs.setdefault(pairs, []).append(acc)
        if by_pairs:
            row["mqar"] = {p: dict(zip(("mean", "sd", "ci95"), ci95(v)), values=v)
                           for p, v in by_pairs.items()}
            solved = [a >= SOLVED for a in by_pairs.get(train_pairs, [])]
            row["mqar_solved"] = f"{sum(solved)}/{len(solved)}"
            row["solve_rate"] = {"rate": sum(solved) / len(solved) if solved else None,
                                 "wilson95": wilson(sum(solved), len(solved))}
        bench = [r["metrics"]["benchmark_avg"] for r in ok
                 if r["metrics"].get("benchmark_avg") is not None]
        if bench:
            row["benchmark_avg"] = dict(zip(("mean", "sd", "ci95"), ci95(bench)), values=bench)
        tps = [r["metrics"]["tokens_per_s"] for r in ok if r["metrics"].get("tokens_per_s")]
        if tps:
            row["tokens_per_s"] = statistics.fmean(tps)
        row["wall_s"] = statistics.fmean(r.get("wall_s", 0) for r in runs)
        table[mixer] = row
    return table


CLAIMS = (
    # (name, better mixer, worse mixer, metric, sign): sign +1 when higher is better; "mqar" is
    # the accuracy at --train-pairs.
    ("DeltaNet beats linear attention on MQAR", "deltanet", "linear_attention", "mqar", 1),
    ("DeltaNet beats linear attention on bits per byte", "deltanet", "linear_attention", "bpb", -1),
    ("Gated DeltaNet at least as good as DeltaNet on bits per byte", "gated_deltanet",
     "deltanet", "bpb", -1),
    ("Gated DeltaNet at least as good as DeltaNet on MQAR", "gated_deltanet", "deltanet",
     "mqar", 1),
    ("GLA beats linear attention on MQAR", "gla", "linear_attention", "mqar", 1),
    # The modern mixers' papers: Gated DeltaNet over Mamba-2 (Yang et al. 2025), KDA over
    # Gated DeltaNet (Kimi Linear, 2025), Gated DeltaProduct over Gated DeltaNet (Siems et al.
    # 2025), RWKV-7 competitive with them (Peng et al. 2025).
    ("Gated DeltaNet beats Mamba-2 on bits per byte", "gated_deltanet", "mamba2", "bpb", -1),
    ("Gated DeltaNet beats Mamba-2 on MQAR", "gated_deltanet", "mamba2", "mqar", 1),
    ("KDA at least as good as Gated DeltaNet on bits per byte", "kda", "gated_deltanet", "bpb",
     -1),
    ("KDA at least as good as Gated DeltaNet on MQAR", "kda", "gated_deltanet", "mqar", 1),
    ("Gated DeltaProduct at least as good as Gated DeltaNet on bits per byte",
     "gated_deltaproduct", "gated_deltanet", "bpb", -1),
    ("Gated DeltaProduct at least as good as Gated DeltaNet on MQAR", "gated_deltaproduct",
     "gated_deltanet", "mqar", 1),
    ("RWKV-7 at least as good as Gated DeltaNet on bits per byte", "rwkv7", "gated_deltanet",
     "bpb", -1),
)


def values(row: dict[str, Any], metric: str, pairs: str) -> list[float]:
    if metric == "bpb":
        return (row.get("bpb") or {}).get("values", [])
    return (row.get("mqar", {}).get(pairs) or {}).get("values", [])


def orderings(table: dict[str, Any], pairs: str) -> list[dict[str, Any]]:
    """The published orderings, each as a difference with its 95% interval (Welch): 'holds'
    when the interval lies on the claimed side of zero ('at least as good': touches zero at
    most), 'fails' when it lies wholly on the other side, 'inconclusive' when it covers both."""
    out = []
    for name, a, b, metric, sign in CLAIMS:
        if a not in table or b not in table:
            continue
        va, vb = values(table[a], metric, pairs), values(table[b], metric, pairs)
        if metric == "mqar":
            name, metric = f"{name}@{pairs}", f"mqar@{pairs}"
        if not va or not vb:
            continue
        diff, half = diff_ci([sign * v for v in va], [sign * v for v in vb])
        at_least = "at least as good" in name
        if diff - half > 0 or (at_least and diff - half >= 0):
            verdict = "holds"
        elif diff + half < 0:
            verdict = "fails"
        else:
            verdict = "inconclusive"
        out.append({"claim": name, "metric": metric, "difference": diff, "ci95": half,
                    "seeds": [len(va), len(vb)], "verdict": verdict})
    return out


def fmt(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f} (sd {stat['sd']:.{digits}f})"


def markdown(table: dict[str, Any], pairs: list[str]) -> str:
    head = ["mixer", "bpb (95% CI)"] + [f"MQAR@{p}" for p in pairs] + \
           ["solved (Wilson 95%)", "bench avg", "tok/s", "s/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mixer, row in table.items():
        cells = [mixer, fmt(row.get("bpb"))]
        cells += [fmt(row.get("mqar", {}).get(p)) for p in pairs]
        low, high = (row.get("solve_rate") or {}).get("wilson95") or (None, None)
        solved = row.get("mqar_solved", "-")
        cells += [solved if low is None else f"{solved} [{low:.2f}, {high:.2f}]",
                  fmt(row.get("benchmark_avg")),
                  f"{row.get('tokens_per_s', 0):,.0f}", f"{row['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def record(result: dict[str, Any], folder: Path, name: str) -> None:
    """Keep a training's few numbers in `folder` (small JSON, committed with the study)."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = {k: result.get(k) for k in RECORD_KEYS if k in result}
    metrics = kept.get("metrics") or {}
    kept["metrics"] = {k: v for k, v in metrics.items() if k != "benchmark_details"}
    (folder / f"{name}-s{result['seed']}.json").write_text(json.dumps(kept, indent=1) + "\n")


def recorded(folder: Path, name: str, seed: int) -> dict[str, Any]:
    path = folder / f"{name}-s{seed}.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run the study for {name} seed {seed} first")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixers", default=",".join(BASELINES),
                        help="baseline names or mixer files, comma-separated; all: every baseline")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--config", help="YAML overrides for every training")
    parser.add_argument("--tracks", help="lm, mqar or both (default: the preset's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--train-pairs", default="8", help="MQAR pair count that defines solved")
    parser.add_argument("--out", default="bench-out/proxy")
    parser.add_argument("--record", type=Path,
                        help="folder for each training's small JSON (commit it)")
    parser.add_argument("--summarize-only", action="store_true",
                        help="rebuild the tables from --record alone, training nothing")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mixers == "all":
        from evolve.model.contract import BASELINE_NAMES

        args.mixers = ",".join(BASELINE_NAMES)
    mixers = args.mixers.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(m, s) for s in seeds for m in mixers]
    t0 = time.time()
    if args.summarize_only:
        if args.record is None:
            parser.error("--summarize-only reads the trainings from --record FOLDER")
        done = [(m, recorded(args.record, name_of(m), s)) for m, s in jobs]
    else:
        with ThreadPoolExecutor(args.workers) as pool:
            done = list(pool.map(lambda ms: (ms[0], run_one(ms[0], ms[1], out, args)), jobs))
        if args.record is not None:
            for mixer, result in done:
                record(result, args.record, name_of(mixer))
    results: dict[str, list[dict[str, Any]]] = {name_of(m): [] for m in mixers}
    for mixer, result in done:
        results[name_of(mixer)].append(result)
    table = summarize(results, args.train_pairs)
    pairs = sorted({p for row in table.values() for p in row.get("mqar", {})}, key=int)
    text = markdown(table, pairs)
    claims = orderings(table, args.train_pairs)
    text += "\n| published ordering | difference (better is +) | 95% CI | seeds | verdict |\n"
    text += "|---|---|---|---|---|\n"
    for c in claims:
        text += (f"| {c['claim']} | {c['difference']:+.3f} | ± {c['ci95']:.3f} | "
                 f"{c['seeds'][0]}, {c['seeds'][1]} | {c['verdict']} |\n")
    print(text)
    summary = {"preset": args.preset, "config": args.config, "seeds": list(seeds),
               "workers": args.workers, "threads": args.threads, "wall_s": time.time() - t0,
               "solved_threshold": SOLVED, "train_pairs": args.train_pairs, "table": table,
               "orderings": claims}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(text)
    print(f"wrote {out / 'summary.json'} and {out / 'summary.md'} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
