"""The `evolve` command.

    evolve train --mixer deltanet --preset tiny            # train and score one mixer
    evolve train --mixer path/to/mixer.py --preset tiny --out state/try1
    evolve config show [--preset tiny] [CONFIG]            # the resolved config, every key
    evolve config validate CONFIG

Heavy imports (torch) happen inside the commands, so `evolve --help` and the read-only
commands start fast on a login node.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evolve.configio import ConfigError


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
    p.add_argument("--json", action="store_true", help="print result.json instead of a table")


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show or validate a configuration")
    p.add_argument("action", choices=["show", "validate"])
    p.add_argument("file", nargs="?", help="YAML training config (overrides the preset)")
    p.add_argument("--preset", default="tiny")


def cmd_train(args: argparse.Namespace) -> int:
    from evolve.presets import load_train_config
    from evolve.train import train_foreground

    cfg = load_train_config(args.preset, args.config)
    if args.seed is not None:
        cfg.seed = args.seed
    if args.tracks:
        cfg = cfg.only_tracks(args.tracks.split(","))
    name = Path(args.mixer).stem if args.mixer.endswith(".py") else args.mixer
    out = Path(args.out or f"state/train/{name}-{args.preset}-s{cfg.seed}")
    result = train_foreground(args.mixer, cfg, out, preset=args.preset)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from evolve.show import print_result
        print_result(result, out)
    return 0 if result.get("status") == "ok" else 1


def cmd_config(args: argparse.Namespace) -> int:
    from evolve.configio import dump_yaml
    from evolve.presets import load_train_config

    cfg = load_train_config(args.preset, args.file)
    if args.action == "show":
        print(dump_yaml(cfg), end="")
    else:
        print(f"{args.file or args.preset}: valid")
    return 0


COMMANDS = {"train": cmd_train, "config": cmd_config}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evolve", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_config(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"evolve: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evolve: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors of known kinds become one line
        from evolve.errors import user_message

        message = user_message(exc)
        if message is None:
            raise
        print(f"evolve: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
