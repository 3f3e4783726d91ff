"""Time the CHECK gates on the five baselines: seconds per gate, sandbox start-up, total.

    .venv/bin/python tools/bench/gates.py                 # table + bench-out/gates.json
    .venv/bin/python tools/bench/gates.py --repeat 3      # best of 3 runs per baseline

Every gate runs, as in `evolve check --keep-going` (softmax attention fails the cost gate and
still gets the parameter gate). The issue's budget is 30 s per candidate on a 2-core CPU; the
table quotes each total as a fraction of it, and the cost gate of softmax against the linear
baselines' (the deterministic figures fail it before any timing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

from evolve.gates.check import GATES, CheckConfig, CheckReport, check_file
from evolve.model.contract import BASELINE_NAMES

BUDGET_S = 30.0


def run(name: str, cfg: CheckConfig, repeat: int) -> CheckReport:
    best: CheckReport | None = None
    for _ in range(repeat):
        start = time.monotonic()
        report = check_file(name, cfg)
        report.elapsed_s = time.monotonic() - start
        if best is None or report.elapsed_s < best.elapsed_s:
            best = report
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per baseline (best kept)")
    parser.add_argument("--out", default="bench-out/gates.json")
    args = parser.parse_args()
    cfg = replace(CheckConfig(), stop_at_first_failure=False)
    rows = []
    for name in BASELINE_NAMES:
        report = run(name, cfg, args.repeat)
        gates = {v.gate: round(v.elapsed_s, 3) for v in report.verdicts}
        rows.append({
            "baseline": name, "passed": {v.gate: v.passed for v in report.verdicts},
            "gate_s": gates, "startup_s": round(report.elapsed_s - sum(gates.values()), 3),
            "total_s": round(report.elapsed_s, 3),
            "cost": {k: v for k, v in report.verdict("cost").measured.items()  # type: ignore
                     if k.endswith("exponent")},
        })
    header = f"{'baseline':<17}" + "".join(f"{g:>10}" for g in GATES) + \
        f"{'startup':>10}{'total':>9}{'/budget':>9}  cost exponents (time, memory, flops)"
    print(header)
    for row in rows:
        cells = "".join(f"{row['gate_s'].get(g, float('nan')):>9.2f}"
                        f"{'' if row['passed'].get(g, True) else '!'}"
                        f"{' ' if row['passed'].get(g, True) else ''}" for g in GATES)
        exps = ", ".join("-" if row["cost"].get(k) is None else f"{row['cost'][k]:.2f}"
                         for k in ("time_exponent", "memory_exponent", "flops_exponent"))
        print(f"{row['baseline']:<17}{cells}{row['startup_s']:>10.2f}{row['total_s']:>9.2f}"
              f"{row['total_s'] / BUDGET_S:>9.0%}  {exps}")
    print("('!' marks a failed gate; softmax must fail cost and only cost)")
    linear = [r["gate_s"]["cost"] for r in rows if r["baseline"] != "softmax"]
    softmax = next(r for r in rows if r["baseline"] == "softmax")["gate_s"]["cost"]
    ratio = softmax / (sum(linear) / len(linear))
    print(f"cost gate: softmax {softmax:.2f} s vs linear baselines {sum(linear) / len(linear):.2f} "
          f"s on average ({ratio:.2f}x)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m": os.getloadavg()[0]},
        "budget_s": BUDGET_S, "rows": rows, "softmax_vs_linear_cost_gate": round(ratio, 3),
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
