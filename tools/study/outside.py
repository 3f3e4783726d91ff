"""Designs from outside: ASI-Arch's 106 published layers through evolve's adapter and gates.

    .venv/bin/python tools/study/outside.py --census                 # all 106, resumable
    .venv/bin/python tools/study/outside.py --census --names delta_net_mor,delta_net_psfr
    .venv/bin/python tools/study/outside.py --best 5                 # ASI-Arch's five best
    .venv/bin/python tools/study/outside.py --census --data ASI-Arch/data/106.json
    .venv/bin/python tools/study/outside.py --remeasure-setup bench-out/outside-run --preset explore
    .venv/bin/python tools/study/outside.py --remeasure-table bench-out/outside-run/outside

The designs come from tests/fixtures/asi_arch/106.json.gz (ASI-Arch's data/106.json, reduced;
see the README there) or from the original file given with --data. The census adapts each
program (evolve.model.fla_adapter), writes the mixer file under --work, and runs every gate on
it in the gates' own sandbox with the default CheckConfig (keep-going: every gate whose
prerequisites passed runs, so each gate's count covers every design that reached it). One
small JSON per design goes to <out>/census/<name>.json; a design already there is not redone,
so a killed census resumes. The summary (<out>/census.json and census.md) counts the designs
that import and that pass each gate, and gives one example per failure class.

The re-measurement runs in parts, each resumable: --remeasure-setup writes a run file and a run
whose baselines train with --seeds seeds, imports the --best designs into it (`evolve import`'s
path, gates included) and prints the commands that follow: `evolve run RUN_FILE` (interrupt and
restart it at will), then `evolve verify RUN ID --seeds N --no-wait` per imported design and
`evolve run RUN_FILE` again. --remeasure-table then compares each design with each baseline
(tools/study/designs.py: bpb and MQAR recall, Welch 95% intervals) beside ASI-Arch's reported
benchmark average, in <out>/remeasure.json and remeasure.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "tests" / "fixtures" / "asi_arch" / "106.json.gz"
DEFAULT_OUT = REPO / "docs" / "results" / "outside"
DEFAULT_WORK = REPO / "bench-out" / "outside"
MESSAGE_CHARS = 400
"""A verdict's message is kept as its first and its last MESSAGE_CHARS characters (a crash's
output tail ends with the exception, its start says where)."""


def _scores(csv: str) -> dict[str, float | None]:
    head, row = csv.strip().split("\n")
    return {k: None if v == "nan" else float(v)
            for k, v in zip(head.split(",")[1:], row.split(",")[1:])}


def load_designs(path: Path = DEFAULT_DATA) -> list[dict[str, Any]]:
    """ASI-Arch's designs: name, program, benchmarks (with 'average'), from the vendored fixture
    or from the original data/106.json."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        records = json.load(f)
    designs = []
    for i, r in enumerate(records):
        if "program" not in r or "name" not in r:
            raise ValueError(f"{path}: record {i} has no 'name' and 'program'; expected "
                             "ASI-Arch's data/106.json or the fixture made from it")
        benchmarks = r.get("benchmarks") or _scores(r.get("result", {}).get("test", ",\n,"))
        designs.append({"name": r["name"], "name_new": r.get("name_new"),
                        "benchmarks": benchmarks, "score": r.get("score"),
                        "program": r["program"]})
    return designs


def best(designs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The `n` designs with the highest reported benchmark average (ties by name)."""
    return sorted(designs, key=lambda d: (-(d["benchmarks"].get("average") or 0.0),
                                          d["name"]))[:n]


def census_one(design: dict[str, Any], work: Path) -> dict[str, Any]:
    """Adapt one design and run every gate on it: a small JSON-able record."""
    from evolve.gates.check import CheckConfig, check_file
    from evolve.model.fla_adapter import adapt

    name = design["name"]
    record: dict[str, Any] = {"name": name, "name_new": design.get("name_new"),
                              "reported_average": design["benchmarks"].get("average")}
    try:
        adapted = adapt(design["program"], f"{name}.py")
    except ValueError as exc:  # NotAnFlaLayer, AdaptError: the reason is the census's figure
        return {**record, "adapted": False, "adapt_error": str(exc)}
    path = work / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(adapted.code)
    start = time.monotonic()
    report = check_file(path, CheckConfig(stop_at_first_failure=False))
    verdicts = [{"gate": v.gate, "passed": v.passed, "message": _clip(v.message),
                 "measured": {k: x for k, x in v.measured.items()
                              if isinstance(x, (int, float, str, bool)) or x is None}}
                for v in report.verdicts]
    return {**record, "adapted": True, "layer": adapted.layer, "rewrites": len(adapted.notes),
            "passed": report.passed, "failed_gate": report.failed_gate,
            "incomplete": report.sandbox.get("incomplete"), "verdicts": verdicts,
            "elapsed_s": round(time.monotonic() - start, 1)}


def _clip(message: str) -> str:
    if len(message) <= 2 * MESSAGE_CHARS:
        return message
    return f"{message[:MESSAGE_CHARS]} [...] {message[-MESSAGE_CHARS:]}"


def failure_class(gate: str, message: str) -> str:
    """A failure's class: its gate and the exception it names (`RuntimeError: expected scalar
    type Float but found BFloat16`), else its first line, file names and numbers blurred."""
    errors = re.findall(r"\b([A-Z]\w*(?:Error|Exception|Warning)): ([^\n]*)", message)
    if errors:
        kind, text = errors[-1]
        first = f"{kind}: {text}"
    else:
        first = message.strip().split("\n")[0]
    first = re.sub(r"\S+\.py(:\d+)*:? ", "", first)
    first = re.sub(r"(?<!\w)\d+([.,]\d+)*(e[-+]?\d+)?", "#", first)
    first = re.sub(r"#(\.\.#)?(, #(\.\.#)?)+", "#", first)  # lists of positions
    return f"{gate}: {first[:90]}"


def summarize(records: list[dict[str, Any]], gates: tuple[str, ...]) -> dict[str, Any]:
    """Counts per gate and one example per failure class."""
    adapted = [r for r in records if r.get("adapted")]
    per_gate = {}
    for gate in gates:
        ran = [v for r in adapted for v in r["verdicts"] if v["gate"] == gate]
        per_gate[gate] = {"ran": len(ran), "passed": sum(v["passed"] for v in ran),
                          "failed": sum(not v["passed"] for v in ran)}
    classes: dict[str, dict[str, Any]] = {}
    for r in records:
        failures = [("adapter", r["adapt_error"])] if not r.get("adapted") else \
            [(v["gate"], v["message"]) for v in r["verdicts"] if not v["passed"]]
        for gate, message in failures:
            key = failure_class(gate, message)
            entry = classes.setdefault(key, {"gate": gate, "class": key, "count": 0,
                                             "example": r["name"], "reason": message})
            entry["count"] += 1
    return {"designs": len(records), "adapted": len(adapted),
            "not_adapted": {r["name"]: r["adapt_error"] for r in records if not r.get("adapted")},
            "passed_all": sum(bool(r.get("passed")) for r in adapted),
            "per_gate": per_gate,
            "failure_classes": sorted(classes.values(), key=lambda c: -c["count"])}


def census_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# ASI-Arch's {summary['designs']} designs through evolve's adapter and gates", "",
             "Made by `.venv/bin/python tools/study/outside.py --census` (default CheckConfig, "
             "explore backbone, every gate whose prerequisites passed); one record per design "
             "in `census/`.", "",
             f"- adapted (imported as candidates): {summary['adapted']} of {summary['designs']}",
             f"- passed every gate: {summary['passed_all']} of {summary['adapted']} adapted", "",
             "| gate | ran | passed | failed |", "|---|---|---|---|"]
    lines += [f"| {g} | {c['ran']} | {c['passed']} | {c['failed']} |"
              for g, c in summary["per_gate"].items()]
    lines += ["", "## Failure classes (one example each)", ""]
    for c in summary["failure_classes"]:
        lines_of = c["reason"].strip().split("\n")
        # A crash's output: its first line says where, its last line the exception.
        reason = lines_of[0][:240] + (f" [...] {lines_of[-1][:240]}" if len(lines_of) > 2
                                      and "exited with status" in lines_of[0] else "")
        lines.append(f"- **{c['gate']}** ({c['count']}x), e.g. `{c['example']}`: {reason}")
    for name, why in summary["not_adapted"].items():
        lines.append(f"- not adapted: `{name}`: {why}")
    return "\n".join(lines) + "\n"


def run_census(designs: list[dict[str, Any]], out: Path, work: Path) -> dict[str, Any]:
    from evolve.gates.check import GATES

    folder = out / "census"
    folder.mkdir(parents=True, exist_ok=True)
    for i, design in enumerate(designs, 1):
        target = folder / f"{design['name']}.json"
        if target.exists():
            continue
        record = census_one(design, work)
        if record.get("incomplete"):  # the sandbox failed, not the design: redo it next time
            print(f"[{i}/{len(designs)}] {design['name']}: sandbox incomplete "
                  f"({record['incomplete']}); not saved", flush=True)
        else:
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(target)
        verdict = "PASS" if record.get("passed") else (record.get("failed_gate")
                                                       or "not adapted")
        print(f"[{i}/{len(designs)}] {design['name']}: {verdict}", flush=True)
    # The summary covers every design censused so far, not only this call's (--names).
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    summary = summarize(records, GATES)
    (out / "census.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "census.md").write_text(census_markdown(summary))
    return summary


def remeasure_setup(folder: Path, designs: list[dict[str, Any]], *, preset: str,
                    baselines: list[str], seeds: int) -> list[str]:
    """Write <folder>/outside.yaml, create its run, import `designs`; the commands to run next."""
    import yaml

    from evolve.cli.import_design import import_into
    from evolve.model.fla_adapter import adapt
    from evolve.search.driver import Driver
    from evolve.search.run_config import load_run_config

    folder.mkdir(parents=True, exist_ok=True)
    run_file = folder / "outside.yaml"
    # max_candidates is set to what passes the gates once imported (checked counts), so the
    # mutator proposes nothing: the run trains the baselines and the imported designs only.
    data = {"name": "outside", "root": str(folder), "preset": preset,
            "search": {"proposer": "mutator", "analyzer": "rules", "baselines": baselines,
                       "baseline_seeds": seeds, "max_candidates": len(designs)}}
    run_file.write_text(yaml.safe_dump(data))
    driver = Driver(load_run_config(run_file))
    have = {driver.view.proposal(c).get("name") for c in driver.view.state.candidates}
    imported = []
    with driver.store.driver_lock():
        for d in designs:
            if d["name"] in have:
                continue
            adapted = adapt(d["program"], f"{d['name']}.py")
            cid = import_into(driver, adapted.code, {
                "kind": "proposal", "proposer": "import", "name": d["name"], "parents": [],
                "motivation": f"ASI-Arch's {d['name']} ({d.get('name_new')}), reported benchmark "
                              f"average {d['benchmarks'].get('average')}",
                "layer": adapted.layer, "adapter_notes": adapted.notes})
            imported.append(cid)
    passed = [c for c in driver.view.state.candidates
              if driver.view.proposal(c).get("proposer") == "import"
              and driver.view.state.candidates[c].status != "rejected"]
    data["search"]["max_candidates"] = max(1, len(passed))
    run_file.write_text(yaml.safe_dump(data))
    run = folder / "outside"
    return [f"evolve run {run_file} --force", *(f"evolve verify {run} {c} --seeds {seeds} "
                                                "--no-wait" for c in passed),
            f"evolve run {run_file}",
            f".venv/bin/python tools/study/outside.py --remeasure-table {run}"]


def remeasure_table(run: Path, designs: list[dict[str, Any]], out: Path,
                    min_seeds: int) -> str:
    """Each imported design against each baseline, beside ASI-Arch's reported average."""
    sys.path.insert(0, str(Path(__file__).parent))
    from designs import collect, compare, markdown  # tools/study/designs.py

    from evolve.state.fsio import read_json
    from evolve.state.store import Store

    store = Store.open(run)
    reported = {d["name"]: d["benchmarks"].get("average") for d in designs}
    found = collect(run, None)
    for design in found.values():  # name the imported designs by ASI-Arch's names
        proposal = read_json(store.candidate(design["candidates"][0]).proposal, None) or {}
        if proposal.get("proposer") == "import":
            design["name"] = proposal["name"]
    rows = compare(found, min_seeds)
    if not rows:
        return (f"{run}: no imported design and baseline has {min_seeds} seeds yet; run the "
                "commands --remeasure-setup printed\n")
    for row in rows:
        row["asi_arch_reported_average"] = reported.get(row["design"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "remeasure.json").write_text(json.dumps({"run": str(run), "rows": rows}, indent=1))
    text = markdown(rows, None) + "\nASI-Arch's reported benchmark averages: " + ", ".join(
        f"{r['design']} {r['asi_arch_reported_average']}" for r in rows
        if r["asi_arch_reported_average"] is not None and r["versus"] == rows[0]["versus"]) + "\n"
    (out / "remeasure.md").write_text(text)
    return text


def export(designs: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Each design adapted (`evolve import`'s adapter) into folder/<name>.py, for trainings by
    path (tools/study/proxy.py trains them with --no-check: a design that fails a gate is
    still measured, and its row says which gate it fails)."""
    from evolve.model.fla_adapter import adapt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in designs:
        path = folder / f"{d['name']}.py"
        path.write_text(adapt(d["program"], path.name).code)
        paths.append(path)
    return paths


def gate_word(census: Path, name: str) -> str:
    """What the census says of a design's gates: 'passes every gate' or the failed gate."""
    record = census / "census" / f"{name}.json"
    if not record.exists():
        return "not in the census"
    r = json.loads(record.read_text())
    if r.get("passed"):
        return "passes every gate"
    failed = next((v for v in r.get("verdicts", []) if not v.get("passed")), {})
    return f"fails {r.get('failed_gate')}: {_clip(str(failed.get('message', '')))[:160]}"


def records_table(records: Path, designs: list[dict[str, Any]], baselines: list[str],
                  pairs: str, out: Path, seeds: int) -> str:
    """The re-measurement from tools/study/proxy.py's records (<records>/<name>-s<seed>.json):
    each design against each of `baselines` on bits per byte and recall at `pairs`, Welch 95%
    intervals, beside ASI-Arch's reported benchmark average and the census's gate verdict."""
    sys.path.insert(0, str(Path(__file__).parent))
    from designs import compare, markdown  # tools/study/designs.py

    def design(name: str, kind: str) -> dict[str, Any]:
        found: dict[str, Any] = {"name": name, "code_hash": name, "kind": kind,
                                 "candidates": [], "seeds": {}}
        for seed in range(seeds):
            path = records / f"{name}-s{seed}.json"
            if not path.exists():
                continue
            r = json.loads(path.read_text())
            if r.get("status") != "ok":
                continue
            m = r.get("metrics") or {}
            found["candidates"].append(path.name)
            found["seeds"][seed] = {"bpb": m.get("bpb"),
                                    "mqar": (m.get("mqar_acc_by_pairs") or {}).get(pairs)}
        return found

    pool = {b: design(b, "baseline") for b in baselines}
    pool.update({d["name"]: design(d["name"], "proposal") for d in designs})
    rows = [r for r in compare(pool, seeds) if r["kind"] == "proposal"]
    reported = {d["name"]: d["benchmarks"].get("average") for d in designs}
    missing = [d["name"] for d in designs if len(pool[d["name"]]["seeds"]) < seeds]
    for row in rows:
        row["asi_arch_reported_average"] = reported.get(row["design"])
        row["gates"] = gate_word(DEFAULT_OUT, row["design"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "remeasure.json").write_text(json.dumps(
        {"records": str(records), "pairs": pairs, "seeds": seeds, "rows": rows,
         "missing": missing}, indent=1))
    text = markdown(rows, int(pairs)) + "\n| design | ASI-Arch's reported benchmark average | " \
        "evolve's gates |\n|---|---|---|\n" + "".join(
            f"| {d['name']} | {reported[d['name']]} | {gate_word(DEFAULT_OUT, d['name'])} |\n"
            for d in designs)
    if missing:
        text += f"\nFewer than {seeds} seeds yet: {', '.join(missing)}\n"
    (out / "remeasure.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="ASI-Arch's data/106.json, or the fixture (default)")
    parser.add_argument("--census", action="store_true", help="adapt and gate every design")
    parser.add_argument("--best", type=int, default=0,
                        help="list the N best designs by reported benchmark average")
    parser.add_argument("--names", help="comma-separated subset of designs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="results folder (small JSON, commit-able)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help="where the adapted mixer files are written")
    parser.add_argument("--remeasure-setup", type=Path, metavar="FOLDER",
                        help="write a run file and its run in FOLDER and import --best designs")
    parser.add_argument("--remeasure-table", type=Path, metavar="RUN",
                        help="the re-measurement table of a run made by --remeasure-setup")
    parser.add_argument("--preset", default="explore", help="training preset of the run")
    parser.add_argument("--baselines", default="deltanet,gated_deltanet",
                        help="comma-separated baselines (add the strongest modern one)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per design and baseline")
    parser.add_argument("--export", type=Path, metavar="FOLDER",
                        help="write the --best (or --names) designs, adapted, to FOLDER/<name>.py")
    parser.add_argument("--remeasure-records", type=Path, metavar="RECORDS",
                        help="the re-measurement table from tools/study/proxy.py's --record "
                             "folder (the designs and --baselines trained with --seeds seeds)")
    parser.add_argument("--pairs", default="16", help="MQAR pairs of the recall column")
    args = parser.parse_args(argv)
    designs = load_designs(args.data)
    if args.names:
        wanted = args.names.split(",")
        unknown = sorted(set(wanted) - {d["name"] for d in designs})
        if unknown:
            parser.error(f"unknown design(s) {', '.join(unknown)} in {args.data}")
        designs = [d for d in designs if d["name"] in wanted]
    if args.best and not (args.remeasure_setup or args.export or args.remeasure_records):
        for d in best(designs, args.best):
            print(f"{d['benchmarks']['average']:.4f}  {d['name']}  ({d['name_new']})")
    if args.census:
        summary = run_census(designs, args.out, args.work)
        print(census_markdown(summary))
    if args.remeasure_setup:
        chosen = best(designs, args.best or 5)
        for command in remeasure_setup(args.remeasure_setup, chosen, preset=args.preset,
                                       baselines=args.baselines.split(","), seeds=args.seeds):
            print(command)
    if args.remeasure_table:
        print(remeasure_table(args.remeasure_table, designs, args.out, args.seeds), end="")
    chosen = best(designs, args.best) if args.best else designs
    if args.export:
        for path in export(chosen, args.export):
            print(path)
    if args.remeasure_records:
        print(records_table(args.remeasure_records, chosen, args.baselines.split(","),
                            args.pairs, args.out, args.seeds), end="")
    if not (args.best or args.census or args.remeasure_setup or args.remeasure_table
            or args.export or args.remeasure_records):
        parser.error("nothing to do: give --census, --best N, --export, --remeasure-setup, "
                     "--remeasure-table or --remeasure-records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
