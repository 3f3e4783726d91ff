"""`evolve cognition list|search|show|add`: read and extend a run's cognition base.

    evolve cognition list [--run state/myrun] [--json]
    evolve cognition search "forgetting and decay" [--run RUN] [-k 5] [--backend bm25]
    evolve cognition show s04-gated-deltanet [--run RUN]
    evolve cognition add --run RUN --title T --insight I [--trigger ..] [--guidance ..] [--source ..]

Without --run the packaged seed ideas are shown (read-only).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from evolve.agents.cognition import BACKENDS, Cognition, CognitionConfig, Entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evolve cognition",
                                     description="the cognition base: ideas and lessons")
    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", help="run folder (default: the packaged seed ideas, read-only)")
    common.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="retrieval: MiniLM embeddings or BM25 (auto: MiniLM if installed)")
    common.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("list", parents=[common], help="every entry, one line each")
    p = sub.add_parser("search", parents=[common], help="the entries most relevant to a query")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="how many entries (default 5)")
    p = sub.add_parser("show", parents=[common], help="one entry in full")
    p.add_argument("id")
    p = sub.add_parser("add", parents=[common], help="add an entry by hand (needs --run)")
    for name in ("title", "insight"):
        p.add_argument(f"--{name}", required=True)
    for name in ("trigger", "guidance"):
        p.add_argument(f"--{name}", default="")
    p.add_argument("--source", default="added by hand")
    p.add_argument("--tags", default="", help="comma-separated")
    return parser


def open_base(run: str | None, backend: str) -> Cognition:
    config = CognitionConfig(backend=backend)
    if run is None:
        return Cognition(None, config=config)
    from evolve.state.store import Store

    return Cognition.for_store(Store.open(run), config)


def main_cognition(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        base = open_base(args.run, args.backend if args.action == "search" else "bm25")
        if args.action == "list":
            entries = base.entries()
            if args.json:
                print(json.dumps([e.to_dict() for e in entries], indent=1))
            for e in [] if args.json else entries:
                print(f"{e.id:34s} {e.kind:6s} +{len(e.supporting)}/-{len(e.contradicting)} "
                      f"used {e.uses:<3d} {e.title}")
        elif args.action == "search":
            if args.k < 1:
                raise ValueError(f"-k {args.k} must be >= 1")
            hits = base.search(args.query, args.k)
            if args.json:
                print(json.dumps([{"score": h.score, **h.entry.to_dict()} for h in hits],
                                 indent=1))
            for h in [] if args.json else hits:
                print(f"{h.score:7.3f}  {h.entry.id:34s} {h.entry.title}")
            if not hits and not args.json:
                print(f"no entry matches {args.query!r} ({base.backend})")
        elif args.action == "show":
            entry = base.get(args.id)
            print(json.dumps(entry.to_dict(), indent=1) if args.json else describe(entry))
        else:
            if args.run is None:
                raise ValueError("`evolve cognition add` needs --run RUN: the seed set is "
                                 "read-only")
            tags = [t.strip() for t in args.tags.split(",") if t.strip()]
            entry = base.add({"title": args.title, "insight": args.insight,
                              "trigger": args.trigger, "guidance": args.guidance,
                              "source": args.source, "tags": tags})
            print(entry.id)
    except (ValueError, RuntimeError) as exc:
        print(f"evolve cognition: {exc}", file=sys.stderr)
        return 2
    return 0


def describe(entry: Entry) -> str:
    """An entry as a few wrapped paragraphs."""
    def para(label: str, text: str) -> str:
        return textwrap.fill(f"{label}: {text}", width=100, subsequent_indent="  ")

    lines = [f"{entry.id} ({entry.kind}): {entry.title}", para("When", entry.trigger),
             para("Insight", entry.insight), para("Guidance", entry.guidance),
             para("Source", entry.source),
             f"Observed {entry.observations}x, used {entry.uses}x, tags: "
             f"{', '.join(entry.tags) or '-'}"]
    for label, items in (("Supporting", entry.supporting), ("Contradicting",
                                                            entry.contradicting)):
        lines += [para(f"{label}", f"{e.get('source')}: {e.get('note')}") for e in items]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main_cognition())
