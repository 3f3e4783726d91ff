"""Proxy validity: train the baselines with several seeds and report means, 95% intervals,
the seed-to-seed noise floor and MQAR success rates, as a table, JSON and Markdown.

    .venv/bin/python tools/study/proxy.py --seeds 5 --workers 2 --out bench-out/proxy
    .venv/bin/python tools/study/proxy.py --mixers deltanet,linear_attention --seeds 3 \
        --config my_overrides.yaml --tracks mqar

Each training is one `evolve train` subprocess (one torch thread each, `--workers` at once);
finished trainings are skipped on a rerun, so the study resumes after an interruption.
"""

from __future__ import annotations

import argparse
import json
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
SOLVED = 0.9
"""MQAR counts as solved by a seed when its accuracy at the training pair count reaches this."""


def ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean, standard deviation and the half-width of the 95% interval of the mean."""
    mean, half = mean_ci(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, sd, half


def run_one(mixer: str, seed: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    folder = out / f"{mixer}-s{seed}"
    result_file = CandidatePaths.of(folder).result
    if result_file.exists():
        result = json.loads(result_file.read_text())
        if result.get("status") == "ok":
            return result
    cmd = [sys.executable, "-m", "evolve.cli.main", "train", "--mixer", mixer, "--preset",
           args.preset, "--seed", str(seed), "--out", str(folder), "--json"]
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
    # (name, better mixer, worse mixer, metric, sign): sign +1 when higher is better.
    ("DeltaNet beats linear attention on MQAR@8", "deltanet", "linear_attention", "mqar@8", 1),
    ("DeltaNet beats linear attention on bits per byte", "deltanet", "linear_attention", "bpb", -1),
    ("Gated DeltaNet at least as good as DeltaNet on bits per byte", "gated_deltanet",
     "deltanet", "bpb", -1),
    ("Gated DeltaNet at least as good as DeltaNet on MQAR@8", "gated_deltanet", "deltanet",
     "mqar@8", 1),
    ("GLA beats linear attention on MQAR@8", "gla", "linear_attention", "mqar@8", 1),
)


def values(row: dict[str, Any], metric: str) -> list[float]:
    if metric == "bpb":
        return (row.get("bpb") or {}).get("values", [])
    return (row.get("mqar", {}).get(metric.split("@")[1]) or {}).get("values", [])


def orderings(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The published orderings, each as a difference with its 95% interval (Welch): 'holds'
    when the interval lies on the claimed side of zero ('at least as good': touches zero at
    most), 'fails' when it lies wholly on the other side, 'inconclusive' when it covers both."""
    out = []
    for name, a, b, metric, sign in CLAIMS:
        if a not in table or b not in table:
            continue
        va, vb = values(table[a], metric), values(table[b], metric)
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
           ["solved", "bench avg", "tok/s", "s/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mixer, row in table.items():
        cells = [mixer, fmt(row.get("bpb"))]
        cells += [fmt(row.get("mqar", {}).get(p)) for p in pairs]
        cells += [row.get("mqar_solved", "-"), fmt(row.get("benchmark_avg")),
                  f"{row.get('tokens_per_s', 0):,.0f}", f"{row['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixers", default=",".join(BASELINES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--config", help="YAML overrides for every training")
    parser.add_argument("--tracks", help="lm, mqar or both (default: the preset's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--train-pairs", default="8", help="MQAR pair count that defines solved")
    parser.add_argument("--out", default="bench-out/proxy")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mixers = args.mixers.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(m, s) for s in seeds for m in mixers]
    t0 = time.time()
    with ThreadPoolExecutor(args.workers) as pool:
        done = list(pool.map(lambda ms: (ms[0], run_one(ms[0], ms[1], out, args)), jobs))
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in mixers}
    for mixer, result in done:
        results[mixer].append(result)
    table = summarize(results, args.train_pairs)
    pairs = sorted({p for row in table.values() for p in row.get("mqar", {})}, key=int)
    text = markdown(table, pairs)
    claims = orderings(table)
    text += "\n| published ordering | difference (better is +) | 95% CI | seeds | verdict |\n"
    text += "|---|---|---|---|---|\n"
    for c in claims:
        text += (f"| {c['claim']} | {c['difference']:+.3f} | ± {c['ci95']:.3f} | "
                 f"{c['seeds'][0]}, {c['seeds'][1]} | {c['verdict']} |\n")
    print(text)
    summary = {"preset": args.preset, "config": args.config, "seeds": list(seeds),
               "workers": args.workers, "threads": args.threads, "wall_s": time.time() - t0,
               "solved_threshold": SOLVED, "table": table, "orderings": claims}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(text)
    print(f"wrote {out / 'summary.json'} and {out / 'summary.md'} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
