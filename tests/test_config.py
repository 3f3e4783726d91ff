"""`evolve config show`: every key under its field's docstring, and the output loads back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from evolve.cli.main import main
from evolve.config.loading import dump_yaml, field_docs
from evolve.search.run_config import default_run_config, load_run_config
from evolve.train.presets import load_train_config


@dataclass(kw_only=True)
class _Inner:
    depth: int = 2
    """How deep it goes."""
    width: int = 3


@dataclass(kw_only=True)
class _Outer:
    name: str = "x"
    """The name, spread over
    two lines of docstring."""
    inner: _Inner = field(default_factory=_Inner)
    """The inner section."""
    missing: _Inner | None = None
    """An optional section left out."""


@dataclass(kw_only=True)
class _Derived(_Outer):
    extra: bool = True
    """Only in the subclass."""


def _show(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["config", "show", *argv]) == 0
    return capsys.readouterr().out


def _above(text: str, key_line: str) -> str:
    """The line right above the first line equal to `key_line` (indentation included)."""
    lines = text.splitlines()
    return lines[lines.index(key_line) - 1]


def test_field_docs_reads_docstrings_and_inherits_them() -> None:
    assert field_docs(_Outer)["name"] == "The name, spread over two lines of docstring."
    assert field_docs(_Inner) == {"depth": "How deep it goes.", "width": ""}
    derived = field_docs(_Derived)
    assert derived["extra"] == "Only in the subclass."
    assert derived["inner"] == "The inner section."


def test_commented_dump_puts_each_docstring_above_its_key() -> None:
    text = dump_yaml(_Outer(), comments=True)
    assert text.splitlines() == [
        "# The name, spread over two lines of docstring.", "name: x",
        "# The inner section.", "inner:",
        "  # How deep it goes.", "  depth: 2",
        "  width: 3",
        "# An optional section left out.", "missing: null",
    ]
    assert yaml.safe_load(text) == yaml.safe_load(dump_yaml(_Outer()))


def test_config_show_prints_each_key_under_its_description(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVOLVE_SITE", raising=False)
    text = _show(capsys)
    assert _above(text, "name: demo") == "# Run name: its state lives in <root>/<name>/."
    assert _above(text, "search:") == "# Proposals, generations, stop conditions."
    assert _above(text, "  generation_size: 4") == \
        "  # Candidates proposed, gated and submitted together as one job array."
    assert _above(text, "      lr: 0.003") == "      # Peak learning rate."
    assert _above(text, "      hidden_size: 128") == "      # Model width D."
    # A long docstring wraps into several comment lines, none past 100 columns.
    assert "  # mutator (no model), llm (the model server:" in text
    assert max(len(line) for line in text.splitlines() if line.lstrip().startswith("#")) <= 100
    # Every key has its description right above it.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip() and not line.lstrip().startswith(("#", "-")):
            assert lines[i - 1].lstrip().startswith("#"), f"no description above {line!r}"
    assert yaml.safe_load(text) == yaml.safe_load(dump_yaml(default_run_config()))


def test_config_show_output_validates_and_loads_back(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.delenv("EVOLVE_SITE", raising=False)
    saved = tmp_path / "run.yaml"
    saved.write_text(_show(capsys))
    assert main(["config", "validate", str(saved)]) == 0
    assert capsys.readouterr().out == f"{saved}: valid\n"
    assert load_run_config(saved) == default_run_config()

    train = tmp_path / "train.yaml"
    train.write_text(_show(capsys, "--train", "--preset", "explore"))
    assert "# Training seed" in train.read_text()
    assert main(["config", "validate", str(train), "--train"]) == 0
    assert load_train_config("tiny", train) == load_train_config("explore", None)
