"""`evolve init`: write a commented run file for a preset and a place to run, with no overrides.

    evolve init my-run.yaml --preset explore --launch slurm    # the cluster recipe
    evolve init cpu-run.yaml --preset tiny --launch local --name cpu-run

The file is evolve/configs/cluster.yaml with its name, preset, executor and GPUs per training
set; it carries no `train:` overrides, so `evolve config show` resolves to the preset's own
steps, batch and evaluation. It is validated before it is written; an existing file is kept
unless --force.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from evolve.config.loading import ConfigError

TEMPLATE = Path(__file__).resolve().parents[1] / "configs" / "cluster.yaml"
LAUNCHES = ("slurm", "local")


def render(name: str, preset_name: str, launch: str) -> str:
    """The template's text with these values; a CPU preset asks for no GPU."""
    from evolve.train.presets import PRESETS, preset

    if preset_name not in PRESETS:
        raise ConfigError(f"--preset {preset_name!r}: valid presets: {', '.join(PRESETS)}")
    if launch not in LAUNCHES:
        raise ConfigError(f"--launch {launch!r}: valid choices: {', '.join(LAUNCHES)}")
    gpus = 1 if preset(preset_name).runtime.device == "cuda" else 0
    text = TEMPLATE.read_text()
    for key, value in (("name", name), ("preset", preset_name), ("executor", launch),
                       ("gpus_per_task", str(gpus))):
        text, count = re.subn(rf"^(\s*{key}:) \S+$", rf"\g<1> {value}", text, count=1,
                              flags=re.MULTILINE)
        assert count == 1, f"{TEMPLATE} lost its '{key}:' line"
    return text


def main_init(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="evolve init", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="run file to write, e.g. my-run.yaml")
    parser.add_argument("--preset", default="explore", help="tiny, explore or verify")
    parser.add_argument("--launch", default="slurm", help=f"one of {', '.join(LAUNCHES)}")
    parser.add_argument("--name", help="run name (default: the file's stem)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    path = Path(args.file)
    if path.exists() and not args.force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    text = render(args.name or path.stem, args.preset, args.launch)
    from evolve.search.run_config import load_run_config

    # Validated as the file it becomes (errors name its lines), then renamed into place.
    draft = path.with_name(f".{path.name}.draft")
    draft.write_text(text)
    try:
        load_run_config(draft)  # what validate will say, with this shell's $EVOLVE_SITE
    except ConfigError as exc:
        draft.unlink()
        raise ConfigError(str(exc).replace(str(draft), str(path))) from None
    os.replace(draft, path)
    print(f"wrote {path} (preset {args.preset}, launch {args.launch}); next: "
          f"`evolve config show {path}`, `evolve doctor --config {path}`")
    return 0
