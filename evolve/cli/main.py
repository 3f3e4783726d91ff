"""The `evolve` command.

    evolve run [CONFIG]                                    # the search (default: the demo)
    evolve status [RUN]  /  evolve top [RUN]  /  evolve show ID [--run RUN]
    evolve train --mixer deltanet --preset tiny            # train and score one mixer
    evolve train --mixer path/to/mixer.py --preset tiny --out state/try1   # gates first
    evolve stop RUN [--jobs]                               # STOP; with --jobs, end its trainings
    evolve fsck RUN [--fix]                                # check a run folder; repair it
    evolve check FILE                                      # the gates, in a sandbox
    evolve report RUN / evolve doctor / evolve cognition list|search|add|show
    evolve llm serve --run RUN                             # the local llama.cpp model server
    evolve verify RUN ID [--seeds 3] [--preset explore]    # re-train, confirm or refute
    evolve config show [RUN_FILE]                          # the resolved run config, every key
    evolve config show --train [--preset tiny] [FILE]      # a training config
    evolve config validate RUN_FILE

Heavy imports (torch) happen inside the commands, so `evolve --help` and the read-only
commands start fast on a login node.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evolve.config.loading import ConfigError


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train and score one mixer in the foreground")
    p.add_argument("--mixer", required=True,
                   help="a baseline name (linear_attention, deltanet, gated_deltanet, gla, "
                        "softmax) or a path to a mixer file")
    p.add_argument("--preset", default="tiny", help="tiny, explore or verify")
    p.add_argument("--config", help="YAML file of training settings overriding the preset")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: config's)")
    p.add_argument("--out", help="output folder (default: state/train/<mixer>-<preset>-s<seed>)")
    p.add_argument("--tracks", help="comma-separated subset of tracks to run, e.g. lm or mqar")
    p.add_argument("--json", action="store_true", help="print the result file instead of a table")
    p.add_argument("--no-check", action="store_true",
                   help="train without running the gates first (recorded in the result file)")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run (or resume) a search")
    p.add_argument("config", nargs="?", help="run YAML (default: the embedded demo)")
    p.add_argument("--no-cache", action="store_true",
                   help="train everything, even trainings the site's result cache already holds "
                        "(ROOT/.result-cache: same mixer file, training config, seed, versions)")
    p.add_argument("--force", action="store_true",
                   help="resume even if the config differs from the run's frozen run.yaml")


def _add_read(sub: argparse._SubParsersAction) -> None:
    for name, text in (("status", "progress of a run"), ("top", "leaderboard of a run")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", nargs="?", help="run folder (default: the most recently "
                       "active run under state/)")
        p.add_argument("--json", action="store_true")
        if name == "top":
            p.add_argument("-n", type=int, default=20, help="rows")
    p = sub.add_parser("show", help="one candidate: motivation, code, checks, result, analysis")
    p.add_argument("id", help="candidate id, e.g. c000042")
    p.add_argument("--run", default="state/demo", help="run folder")
    p.add_argument("--json", action="store_true")


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show or validate a run file (or a training config)")
    p.add_argument("action", choices=["show", "validate"])
    p.add_argument("file", nargs="?", help="run YAML (default: the embedded demo), or with "
                   "--train a training config overriding --preset")
    p.add_argument("--train", action="store_true",
                   help="the file is a training config (as for `evolve train --config`)")
    p.add_argument("--preset", default=None, help="with --train: tiny, explore or verify")


def cmd_train(args: argparse.Namespace) -> int:
    from evolve.train.presets import load_train_config
    from evolve.train.job import train_foreground

    cfg = load_train_config(args.preset, args.config)
    if args.seed is not None:
        cfg.seed = args.seed
    if args.tracks:
        cfg = cfg.only_tracks(args.tracks.split(","))
    name = Path(args.mixer).stem if args.mixer.endswith(".py") else args.mixer
    out = Path(args.out or f"state/train/{name}-{args.preset}-s{cfg.seed}")
    from evolve.gates.check import GateFailedError, check_before_training

    try:
        checks = check_before_training(args.mixer, (cfg.lm or cfg.mqar).model,
                                       skip=args.no_check)
    except GateFailedError as exc:
        print(exc, file=sys.stderr)
        return 1
    result = train_foreground(args.mixer, cfg, out, preset=args.preset, checks=checks)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from evolve.train.progress import print_result
        print_result(result, out)
    return 0 if result.get("status") == "ok" else 1


def cmd_config(args: argparse.Namespace) -> int:
    from evolve.config.loading import dump_yaml

    if args.train or args.preset:
        from evolve.train.presets import load_train_config

        cfg = load_train_config(args.preset or "tiny", args.file)
    else:
        from evolve.search.run_config import default_run_config, load_run_config

        cfg = load_run_config(args.file) if args.file else default_run_config()
        from evolve.search.site_launch import site_notes

        for note in site_notes(args.file):  # e.g. a run file's launch: hiding the site's
            print(note, file=sys.stderr)
        if args.action == "validate":  # a partition or account Slurm does not know, if it answers
            from evolve.cli.doctor_cluster import check_slurm_names

            names = check_slurm_names(cfg.launch)
            if names.status == "FAIL":
                raise ConfigError(f"{args.file}: {names.detail}")
    if args.action == "show":
        print(dump_yaml(cfg, comments=True), end="")
    else:
        print(f"{args.file or args.preset}: valid")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from evolve.search.run_config import default_run_config, load_run_config
    from evolve.search.driver import Driver

    from evolve.train.budget import check_token_budget

    cfg = load_run_config(args.config) if args.config else default_run_config()
    check_token_budget(cfg.train)  # before the run folder is touched or anything submitted
    driver = Driver(cfg, force=args.force, reuse_results=not args.no_cache)
    code = driver.run()
    if driver.stopped_on_error:
        code = code or 1  # nothing could train or be scored: the job ends FAILED in sacct
    print(f"evolve: {cfg.run_dir}: stopped ({driver.stop_reason})", file=sys.stderr)
    from evolve.views.board import print_top
    from evolve.views.report import write_report

    print_top(cfg.run_dir, limit=20)
    from evolve.state.layout import RunLayout

    page = write_report(cfg.run_dir, RunLayout(cfg.run_dir).report_dir)
    print(f"report: {page}")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    from evolve.views.board import print_status

    from evolve.cli.runs import default_run

    return print_status(Path(args.run) if args.run else default_run(), as_json=args.json)


def cmd_top(args: argparse.Namespace) -> int:
    from evolve.views.board import print_top

    from evolve.cli.runs import default_run

    return print_top(Path(args.run) if args.run else default_run(), limit=args.n,
                     as_json=args.json)


def cmd_show(args: argparse.Namespace) -> int:
    from evolve.views.board import print_candidate

    return print_candidate(Path(args.run), args.id, as_json=args.json)


COMMANDS = {"run": cmd_run, "status": cmd_status, "top": cmd_top, "show": cmd_show,
            "train": cmd_train, "config": cmd_config}
# Commands whose module parses its own arguments (argv after the command name).
DELEGATED = {"check": ("evolve.gates.check", "main_check"), "report": ("evolve.views.report", "main_report"),
             "doctor": ("evolve.cli.doctor", "main_doctor"), "init": ("evolve.cli.init_run", "main_init"),
             "verify": ("evolve.cli.verify", "main_verify"),
             "fsck": ("evolve.cli.fsck", "main_fsck"), "stop": ("evolve.cli.stop", "main_stop"),
             "cognition": ("evolve.cli.cognition", "main_cognition"),
             "import": ("evolve.cli.import_design", "main_import"),
             "llm": ("evolve.cli.main", "main_llm")}


def main_llm(argv: list[str]) -> int:
    """`evolve llm serve ...`: the local llama.cpp model server."""
    if not argv or argv[0] != "serve":
        print("usage: evolve llm serve (--run RUN | --endpoint FILE) [--model GGUF] ...",
              file=sys.stderr)
        return 2
    from evolve.agents.server import main_serve

    return main_serve(argv[1:])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evolve", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_read(sub)
    for name, (module, _) in DELEGATED.items():
        sub.add_parser(name, help=f"see `evolve {name} --help`", add_help=False)
    _add_train(sub)
    _add_config(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _dispatch(argv)
    except BrokenPipeError:
        # `evolve show ID | head`: the reader left; end quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(argv: list[str]) -> int:
    try:
        if argv and argv[0] in DELEGATED:
            import importlib

            module, func = DELEGATED[argv[0]]
            return getattr(importlib.import_module(module), func)(argv[1:])
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"evolve: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evolve: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors of known kinds become one line
        from evolve.cli.errors import user_message

        message = user_message(exc)
        if message is None:
            raise
        print(f"evolve: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
