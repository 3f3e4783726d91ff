"""Benchmark of the LLM side: proposals from a local model, and cognition retrieval.

Measures, in one run:
  1. spec mode: --spec proposals (each may use --attempts answers: the researcher asks again
     after an unusable one), parents rotating over the four sub-quadratic baselines with
     lessons retrieved for each: the fraction of proposals that parse, make a real change,
     render and pass the structural checks (parse, imports, interface) (goal: at least 90%),
     the same per answer and for first answers, answers and valid proposals per minute;
  2. code mode: --code whole-file proposals, the same figures;
  3. retrieval over the seed cognition base: latency per query with MiniLM embeddings and with
     BM25 (MiniLM's one-time model load reported apart).

Run from the repository root (starts llama.cpp on SmolLM2-135M unless --endpoint is given):
    .venv/bin/python tools/bench/llm.py                          # writes bench-out/llm.json
    .venv/bin/python tools/bench/llm.py --spec 6 --code 2 --endpoint state/run/llm/endpoint.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from evolve.gates.check import check_file
from evolve.agents.cognition import Cognition, CognitionConfig
from evolve.agents.client import LLMClient
from evolve.agents.llm_config import LLMConfig
from evolve.agents.retrieval import minilm_available
from evolve.agents.researcher import propose
from evolve.model.render import describe, render
from evolve.model.space import BASELINE_SPECS

GOAL_SPEC_VALID = 0.90
STRUCTURAL = ("parse", "imports", "interface")
PARENTS = ("linear_attention", "deltanet", "gated_deltanet", "gla")
QUERIES = ("forgetting and decay of the state", "the model cannot recall key-value pairs",
           "training diverges or the loss spikes", "improve throughput of the mixer",
           "local patterns and induction heads", "state tracking and parity",
           "which feature map for linear attention", "position encoding for recurrent mixers",
           "write strength of the delta rule", "hybrid with sliding window attention")


def bench_proposals(client: LLMClient, mode: str, n: int, attempts: int, work: Path
                    ) -> dict[str, Any]:
    """`n` proposals in `mode`, each allowed `attempts` answers; fractions valid, rates."""
    ideas = Cognition(None, config=CognitionConfig(backend="bm25"))
    llm_s, answers, first, passed, made = 0.0, 0, 0, 0, 0
    errors: Counter[str] = Counter()
    digests: set[str] = set()
    samples: list[str] = []
    for i in range(n):
        name = PARENTS[i % len(PARENTS)]
        spec = BASELINE_SPECS[name]
        parent = {"id": name, "spec": spec.to_dict(), "code": render(spec, title=name),
                  "motivation": f"the {name} baseline"}
        lessons = [h.entry.to_dict() for h in ideas.search(describe(spec), k=3)]
        start = time.monotonic()
        result = propose(client, parent, mode=mode, lessons=lessons, attempts=attempts)
        llm_s += time.monotonic() - start
        answers += len(result.records)
        for record in result.records:
            error = record.get("outcome", {}).get("error", "")
            if error:
                errors[error.split(":")[0][:70]] += 1
        if not result.ok:
            print(f"  {mode} {i + 1}/{n}: no proposal ({result.error[:80]})", file=sys.stderr,
                  flush=True)
            continue
        made += 1
        samples.append(result.motivation[:160])
        folder = work / f"{mode}-{i}"
        folder.mkdir(parents=True)
        (folder / "mixer.py").write_text(result.code)
        report = check_file(folder / "mixer.py", gates=STRUCTURAL)
        if report.passed:
            passed += 1
            first += result.attempts == 1
            digests.add(result.spec.digest() if result.spec else result.code)
        else:
            errors[f"{report.failed_gate} gate failed"] += 1
        print(f"  {mode} {i + 1}/{n}: {'ok' if report.passed else report.failed_gate} after "
              f"{result.attempts} answer(s)", file=sys.stderr, flush=True)
    return {"proposals": n, "answers": answers, "attempts_allowed": attempts,
            "made": made, "passed_checks": passed, "distinct": len(digests),
            "valid_fraction": passed / n if n else 0.0,
            "first_answer_valid_fraction": first / n if n else 0.0,
            "answer_valid_fraction": passed / answers if answers else 0.0,
            "llm_seconds": round(llm_s, 1),
            "answers_per_min": round(60 * answers / llm_s, 2) if llm_s else 0.0,
            "valid_per_min": round(60 * passed / llm_s, 2) if llm_s else 0.0,
            "errors": dict(errors.most_common()), "motivations": samples[:4]}


def bench_retrieval(repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in ("bm25", "minilm"):
        if backend == "minilm" and not minilm_available():
            out[backend] = {"available": False}
            continue
        base = Cognition(None, config=CognitionConfig(backend=backend))
        start = time.perf_counter()
        base.search(QUERIES[0])  # loads the model and embeds the entries once
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            for query in QUERIES:
                t0 = time.perf_counter()
                base.search(query, k=5)
                times.append(time.perf_counter() - t0)
        out[backend] = {"available": True, "entries": len(base.entries()),
                        "first_query_s": round(first, 3),
                        "median_ms": round(1000 * statistics.median(times), 2),
                        "mean_ms": round(1000 * statistics.fmean(times), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=int, default=20, help="spec-mode proposals")
    parser.add_argument("--code", type=int, default=4, help="code-mode proposals")
    parser.add_argument("--attempts", type=int, default=3,
                        help="answers a proposal may use (the researcher asks again after an "
                             "unusable one)")
    parser.add_argument("--endpoint", help="endpoint.json of a running server (default: start "
                                           "llama.cpp on SmolLM2 here)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--max-tokens", type=int, default=256,
                        help="answer limit (code mode gets 4x)")
    parser.add_argument("--repeats", type=int, default=5, help="retrieval repeats per query")
    parser.add_argument("--out", default="bench-out/llm.json")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"retrieval": bench_retrieval(args.repeats)}
    server = None
    if args.endpoint:
        config = LLMConfig(endpoint_file=args.endpoint, max_tokens=args.max_tokens)
    else:
        from evolve.agents.server import LocalServer

        server = LocalServer(n_ctx=4096, n_threads=args.threads).start()
        config = server.config(max_tokens=args.max_tokens)
    try:
        client = LLMClient(config)
        figures["model"] = client.model
        with tempfile.TemporaryDirectory() as work:
            for mode, n in (("spec", args.spec), ("code", args.code)):
                if n > 0:
                    figures[mode] = bench_proposals(client, mode, n, args.attempts, Path(work))
        figures["usage"] = client.usage()
    finally:
        if server is not None:
            server.stop()
    print_table(figures)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def print_table(figures: dict[str, Any]) -> None:
    print(f"model: {figures.get('model')}")
    print(f"{'mode':5s} {'proposals':>9s} {'answers':>7s} {'valid':>5s} {'valid/prop':>10s} "
          f"{'1st answer':>10s} {'valid/answer':>12s} {'answers/min':>11s} {'valid/min':>9s}")
    for mode in ("spec", "code"):
        row = figures.get(mode)
        if not row:
            continue
        print(f"{mode:5s} {row['proposals']:9d} {row['answers']:7d} {row['passed_checks']:5d} "
              f"{row['valid_fraction']:10.0%} {row['first_answer_valid_fraction']:10.0%} "
              f"{row['answer_valid_fraction']:12.0%} {row['answers_per_min']:11.2f} "
              f"{row['valid_per_min']:9.2f}")
        if mode == "spec":
            met = row["valid_fraction"] >= GOAL_SPEC_VALID
            print(f"      goal: >= {GOAL_SPEC_VALID:.0%} of spec proposals valid: "
                  f"{'met' if met else 'MISSED'}")
        if row["errors"]:
            print(f"      rejected answers: {row['errors']}")
    for backend, row in figures["retrieval"].items():
        if row.get("available"):
            print(f"retrieval {backend:6s} over {row['entries']} entries: median "
                  f"{row['median_ms']:.2f} ms/query (first query incl. load "
                  f"{row['first_query_s']:.2f} s)")
        else:
            print(f"retrieval {backend}: not available")
    r = figures["retrieval"]
    if r.get("minilm", {}).get("available"):
        print(f"MiniLM / BM25 latency ratio: "
              f"{r['minilm']['median_ms'] / r['bm25']['median_ms']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
