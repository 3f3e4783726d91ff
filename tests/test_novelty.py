"""The novelty gate: code duplicates modulo comments and layout; near-duplicate ideas."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from evolve.model.render import render
from evolve.model.space import BASELINE_SPECS
from evolve.search.mutator import propose
from evolve.gates.novelty import NoveltyConfig, NoveltyIndex, code_hash, lexical_embed, normalize_code

SOURCE = '''"""A mixer."""
import torch.nn as nn


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x):  # x: [B, T, D]
        return self.proj(x)
'''

RESTYLED = '''"""The same mixer, documented differently."""
import torch.nn as nn
class Mixer(nn.Module):
    """Docstrings are not code."""
    def __init__(self,cfg):
        # a comment
        super().__init__()
        self.proj = nn.Linear(cfg.hidden_size,
                              cfg.hidden_size)
    def forward(self, x):
        """Apply the projection."""
        return self.proj(x)   # trailing comment
'''


def test_code_differing_only_in_comments_docstrings_and_layout_is_a_duplicate() -> None:
    assert code_hash(SOURCE) == code_hash(RESTYLED)
    assert code_hash(SOURCE) != code_hash(SOURCE.replace("self.proj(x)", "self.proj(x) * 2"))
    index = NoveltyIndex()
    index.add("c000007", source=SOURCE, motivation="a projection")
    assert index.duplicate_of(RESTYLED) == "c000007"
    verdict = index.check(source=RESTYLED, motivation="something else entirely, new words")
    assert (verdict.ok, verdict.kind, verdict.nearest_id) == (False, "duplicate_code", "c000007")
    assert "c000007" in verdict.reason and verdict.code_hash == code_hash(SOURCE)


def test_rendered_specs_with_different_titles_are_duplicates() -> None:
    spec = BASELINE_SPECS["gla"]
    assert code_hash(render(spec, title="gla")) == code_hash(render(spec, title="c000012"))
    assert code_hash(render(spec)) != code_hash(render(spec.replace(out_gate="sigmoid")))


def test_unparsable_code_hashes_stably_on_its_words() -> None:
    broken = "def f(:\n    return  1\n"
    assert normalize_code(broken) == "def f(: return 1"
    assert code_hash(broken) == code_hash("def f(:   return 1")


def _baseline_index(config: NoveltyConfig | None = None) -> NoveltyIndex:
    index = NoveltyIndex(config)
    for name, spec in BASELINE_SPECS.items():
        index.add(name, source=render(spec, title=name), spec=spec,
                  motivation=f"The {name} baseline, as published.")
    return index


def test_a_reworded_idea_on_the_same_spec_is_a_near_duplicate() -> None:
    index = _baseline_index()
    gdn = BASELINE_SPECS["gated_deltanet"]
    verdict = index.check(source=SOURCE, spec=gdn,
                          motivation="The gated_deltanet baseline as it was published.")
    assert (verdict.kind, verdict.nearest_id) == ("near_duplicate", "gated_deltanet")
    assert verdict.similarity is not None and verdict.similarity >= 0.92
    assert "gated_deltanet" in verdict.reason and "0.92" in verdict.reason
    lenient = _baseline_index(NoveltyConfig(similarity_threshold=1.0))
    assert lenient.check(source=SOURCE, spec=gdn,
                         motivation="The gated_deltanet baseline as it was published.").ok


def test_mutator_children_are_novel_against_the_baselines_and_name_their_nearest() -> None:
    index = _baseline_index()
    for child in propose(list(BASELINE_SPECS.values()), random.Random(0), 40):
        verdict = index.check(source=render(child.spec), motivation=child.motivation,
                              spec=child.spec)
        assert verdict.ok, (verdict.reason, child.motivation)
        assert verdict.nearest_id in BASELINE_SPECS and 0 < verdict.similarity < 0.92


def test_the_embedding_is_pluggable() -> None:
    def by_topic(texts: Sequence[str]) -> list[list[float]]:
        return [[float("decay" in t), float("beta" in t), 0.1] for t in texts]

    index = NoveltyIndex(NoveltyConfig(similarity_threshold=0.99), embed=by_topic)
    index.add("c1", motivation="a faster decay")
    index.add("c2", motivation="a negative beta")
    assert index.nearest("beta in (0, 2)")[0] == "c2"
    verdict = index.check(source=SOURCE, motivation="decay per channel")
    assert (verdict.kind, verdict.nearest_id) == ("near_duplicate", "c1")
    assert len(index) == 2
    assert NoveltyIndex().nearest("anything") is None


def test_lexical_embedding_is_deterministic_and_unit_length() -> None:
    a, b = lexical_embed(["delta rule with a decay", "delta rule with a decay"])
    assert a == b and abs(sum(x * x for x in a) - 1.0) < 1e-9
    assert lexical_embed([""])[0] == [0.0] * len(a)


def test_config_rejects_a_threshold_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="similarity_threshold=1.5"):
        NoveltyConfig(similarity_threshold=1.5)
