"""The confirmation of each search method's best design: exported from the study's runs,
re-trained with 5 seeds by tools/study/proxy.py, compared seed by seed with the baselines.

    # 1. each method's best whole-budget design over its search seeds, as a mixer file
    #    (<method>_best_s<search seed>_<candidate>.py)
    .venv/bin/python tools/study/search.py --export-best docs/results/search-confirm \
        --methods mutator,independent,random --seeds 0,1,2,3,4 \
        --out bench-out/search-study --record docs/results/search-study
    # 2. each trained with 5 seeds at the study budget (it prints this command)
    .venv/bin/python tools/study/proxy.py --seeds 5 --config tools/study/study-budget.yaml \
        --train-pairs 16 --mixers docs/results/search-confirm/mutator_best_s1_c000011.py,... \
        --out bench-out/search-confirm --record docs/results/search-confirm
    # 3. the table, part of the study's summary
    .venv/bin/python tools/study/search.py --summarize-only ... \
        --confirm docs/results/search-confirm --baseline-record docs/results/proxy-study

A search run's best is a maximum over a handful of noisy trainings, one seed each: it is biased
upwards (the winner's curse). Re-training it with seeds 0-4 measures what it is worth. The
baselines' trainings at the same budget and seeds are tools/study/proxy.py's records
(docs/results/proxy-study); a search run trains its baselines with the same code, budget and
seed, bit for bit (docs/RESULTS.md part 4), so they are not trained again. Every comparison
is paired by training seed (design seed s against baseline seed s): the intervals are t
intervals of the per-seed differences. Recall at the proxy scale is bimodal (a seed solves
MQAR or does not), so each design's solve rate is shown with its Wilson interval beside the
mean.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from evolve.search.fitness import Reference, fitness, mean_ci, mqar_accuracy

DESIGNS_FILE = "designs.json"
"""Which run and candidate each exported <method>_best.py came from (in the confirm folder)."""


def _proxy() -> ModuleType:
    """tools/study/proxy.py (its Wilson interval and solve threshold): a sibling script,
    imported as a module (see search.py's `_confirm_tool`)."""
    import proxy

    return proxy


def design_name(method: str, info: dict[str, Any]) -> str:
    """The exported file's stem, which tools/study/proxy.py names its trainings by: the method,
    the search seed and the candidate, so that a later, better best never takes the name (and
    so the records) of an earlier one."""
    return f"{method}_best_s{info['search_seed']}_{info['candidate']}"


def best_designs(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per method, its best whole-budget proposal over all its search seeds' runs (the study's
    readings): the run, the candidate, and what the search measured of it (one seed)."""
    best: dict[str, dict[str, Any]] = {}
    for method, by_seed in runs.items():
        for seed, reading in sorted(by_seed.items()):
            for t in reading["trainings"]:
                if t["event"] != "scored" or t.get("fitness") is None:
                    continue
                if method not in best or t["fitness"] > best[method]["search_fitness"]:
                    best[method] = {"run": reading["run"], "search_seed": seed,
                                    "candidate": t["id"], "search_fitness": t["fitness"],
                                    "search_bpb": t.get("bpb"), "search_mqar": t.get("mqar")}
    return best


def export(best: dict[str, dict[str, Any]], out: Path, folder: Path) -> list[Path]:
    """Copy each best design's mixer file out of its run folder (under `out`) into `folder` as
    <method>_best.py, byte for byte, and write designs.json (where each came from). A best
    already exported there (designs.json names its run and candidate, and the file's bytes
    have the recorded sha256) is kept as it is: its run folder is not needed again."""
    folder.mkdir(parents=True, exist_ok=True)
    before = json.loads((folder / DESIGNS_FILE).read_text()) \
        if (folder / DESIGNS_FILE).exists() else {}
    designs, paths = {}, []
    for method, info in best.items():
        source = out / info["run"] / "candidates" / info["candidate"] / "mixer.py"
        target = folder / f"{design_name(method, info)}.py"
        had = before.get(method) or {}
        if not source.exists():
            if target.exists() \
                    and (had.get("run"), had.get("candidate")) == (info["run"], info["candidate"]) \
                    and hashlib.sha256(target.read_bytes()).hexdigest() == had.get("sha256"):
                designs[method] = {**info, "file": target.name, "sha256": had["sha256"]}
                paths.append(target)
                continue
            raise SystemExit(f"{source} is missing: exporting {method}'s best needs its run "
                             f"folder (the committed reading holds its scores, not its code)")
        shutil.copyfile(source, target)
        code = target.read_bytes()
        designs[method] = {**info, "file": target.name,
                           "sha256": hashlib.sha256(code).hexdigest()}
        paths.append(target)
    (folder / DESIGNS_FILE).write_text(json.dumps(designs, indent=1) + "\n")
    return paths


def _load(folder: Path, name: str, seed: int) -> dict[str, Any] | None:
    path = folder / f"{name}-s{seed}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _paired(values: list[float]) -> dict[str, Any]:
    mean, half = mean_ci(values)
    return {"mean": mean, "ci95": half, "n": len(values),
            "verdict": ("better" if mean - half > 0 else "worse" if mean + half < 0
                        else "not distinguishable") if not math.isnan(half) else "one seed"}


def confirmation(folder: Path, baseline_record: Path, fitness_cfg: dict[str, Any],
                 baselines: list[str], seeds: list[int]) -> dict[str, Any] | None:
    """The confirmation table's numbers: per design, its scores over `seeds` (each paired with
    the reference baseline's training of the same seed), its solve rate, and the paired
    differences with the best baseline on each axis; then each loop's best against each
    control's best. None when `folder` has no designs.json."""
    if not (folder / DESIGNS_FILE).exists():
        return None
    proxy = _proxy()
    designs = json.loads((folder / DESIGNS_FILE).read_text())
    cfg = SimpleNamespace(**{"bpb_weight": 1.0, "mqar_weight": 1.0, "benchmark_weight": 0.0,
                             "mqar_pairs": None, **fitness_cfg})
    pairs = cfg.mqar_pairs

    def scores(result: dict[str, Any] | None) -> tuple[float, float] | None:
        if not result or result.get("status") != "ok":
            return None
        return result["metrics"]["bpb"], mqar_accuracy(result["metrics"], pairs)

    base = {b: {s: scores(_load(baseline_record, b, s)) for s in seeds} for b in baselines}
    missing = [f"{b}-s{s}" for b, by in base.items() for s, v in by.items() if v is None]
    if missing:
        raise SystemExit(f"{baseline_record} lacks the baseline trainings {', '.join(missing)}: "
                         "train them with tools/study/proxy.py --record first")
    mean = {b: (sum(v[0] for v in by.values()) / len(seeds),
                sum(v[1] for v in by.values()) / len(seeds)) for b, by in base.items()}
    best_bpb = min(baselines, key=lambda b: mean[b][0])
    best_mqar = max(baselines, key=lambda b: mean[b][1])
    ref = cfg.reference
    rows: dict[str, Any] = {}
    per_seed_fitness: dict[str, dict[int, float]] = {}
    for method, info in designs.items():
        name = Path(info["file"]).stem
        results = {s: _load(folder, name, s) for s in seeds}
        done = {s: sc for s, r in results.items() if (sc := scores(r)) is not None}
        failed = [s for s, r in results.items() if r is not None and s not in done]
        absent = [s for s, r in results.items() if r is None]
        fits = {}
        for s, (bpb, mqar) in done.items():
            r_bpb, r_mqar = base[ref][s]
            reference = Reference(name=ref, bpb=r_bpb, mqar=r_mqar, bench=None, seeds=1)
            fits[s] = fitness({"status": "ok", "metrics": results[s]["metrics"]}, reference,
                              cfg)["fitness"]
        per_seed_fitness[method] = fits
        solved = sum(v[1] >= proxy.SOLVED for v in done.values())
        again = done.get(info["search_seed"])
        rows[method] = {
            **info, "seeds": sorted(done), "failed_seeds": failed, "missing_seeds": absent,
            "fitness_by_seed": {str(s): f for s, f in fits.items()},
            "fitness": _paired(list(fits.values())),
            "bpb": _paired([v[0] for v in done.values()]),
            "mqar": _paired([v[1] for v in done.values()]),
            "solved": solved, "solve_rate_wilson95": proxy.wilson(solved, len(done)),
            "bpb_vs_best": _paired([base[best_bpb][s][0] - v[0] for s, v in done.items()]),
            "mqar_vs_best": _paired([v[1] - base[best_mqar][s][1] for s, v in done.items()]),
            # Trainings are deterministic per seed on the CPU: the re-training at the search
            # seed should give the search's own numbers back.
            "reproduces_search": None if again is None or info.get("search_bpb") is None
            else again[0] == info["search_bpb"] and again[1] == info["search_mqar"]}
    comparisons = []
    for loop in ("mutator", "llm"):
        for control in ("independent", "random", "llm_independent"):
            if loop not in per_seed_fitness or control not in per_seed_fitness \
                    or (loop, control) == ("mutator", "llm_independent"):
                continue
            a, b = per_seed_fitness[loop], per_seed_fitness[control]
            both = sorted(set(a) & set(b))
            if both:
                comparisons.append({"loop": loop, "control": control, "seeds": both,
                                    **_paired([a[s] - b[s] for s in both])})
    return {"seeds": seeds, "reference": ref, "mqar_pairs": pairs,
            "solved_threshold": proxy.SOLVED,
            "baselines": {b: {"bpb": mean[b][0], "mqar": mean[b][1]} for b in baselines},
            "best_bpb_baseline": best_bpb, "best_mqar_baseline": best_mqar,
            "designs": rows, "comparisons": comparisons}


def _ci(stat: dict[str, Any], spec: str = "+.3f") -> str:
    if stat["n"] == 0:
        return "-"
    half = "" if math.isnan(stat["ci95"]) else f" ± {stat['ci95']:.3f}"
    return f"{stat['mean']:{spec}}{half}"


def markdown(table: dict[str, Any]) -> str:
    b, m = table["best_bpb_baseline"], table["best_mqar_baseline"]
    n = len(table["seeds"])
    head = ["method's best", "from", "search fitness (1 seed)", f"fitness ({n} seeds)",
            "bpb", f"MQAR@{table['mqar_pairs']}", "solved (Wilson 95%)", f"Δ bpb vs {b}",
            f"Δ MQAR vs {m}", "re-training at the search seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in table["designs"].items():
        low, high = row["solve_rate_wilson95"]
        solved = (f"{row['solved']}/{len(row['seeds'])} [{low:.2f}, {high:.2f}]"
                  if row["seeds"] else "-")
        again = {None: "-", True: "identical", False: "differs"}[row["reproduces_search"]]
        lines.append("| " + " | ".join([
            method, f"{row['run']} {row['candidate']}", f"{row['search_fitness']:+.3f}",
            _ci(row["fitness"]), _ci(row["bpb"], ".3f"), _ci(row["mqar"], ".3f"), solved,
            _ci(row["bpb_vs_best"]), _ci(row["mqar_vs_best"]), again]) + " |")
    text = "\n".join(lines) + "\n"
    text += (f"\nfitness: against {table['reference']} trained with the same seed (0 = as good); "
             f"Δ bpb: the best baseline on bits per byte ({b}) minus the design, + = the design "
             f"is better; Δ MQAR: the design minus the best baseline on recall ({m}); each a "
             f"mean over seeds {', '.join(map(str, table['seeds']))} with the 95% t interval of "
             f"the per-seed (paired) differences. solved: seeds whose MQAR@{table['mqar_pairs']} "
             f"reached {table['solved_threshold']}.\n")
    if table["comparisons"]:
        text += ("\n| loop's best | control's best | difference of fitness | 95% CI (paired "
                 "over training seeds) | verdict |\n|---|---|---|---|---|\n")
        for c in table["comparisons"]:
            half = "-" if math.isnan(c["ci95"]) else f"± {c['ci95']:.3f}"
            text += (f"| {c['loop']} | {c['control']} | {c['mean']:+.3f} | {half} | "
                     f"{c['verdict']} |\n")
    for method, row in table["designs"].items():
        if row["failed_seeds"] or row["missing_seeds"]:
            text += (f"\n{method}'s best: seeds failed {row['failed_seeds'] or 'none'}, "
                     f"not trained yet {row['missing_seeds'] or 'none'}.\n")
    return text
