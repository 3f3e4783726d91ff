"""The random-search control: valid, new, seeded, and spread over the whole design space."""

from __future__ import annotations

import random
from pathlib import Path

from evolve.gates.check import CheckConfig
from evolve.model.render import spec_from_source
from evolve.model.space import BASELINE_SPECS, FIELDS, OPTIONS, MixerSpec
from evolve.search.proposers import ArchiveEntry, Proposer
from evolve.search.random_search import RandomProposer
from evolve.gates.static import imports_gate, parse_gate


def _archive() -> list[ArchiveEntry]:
    return [ArchiveEntry(id=name, spec=spec, fitness=None) for name, spec in
            BASELINE_SPECS.items()]


def test_drafts_are_valid_new_distinct_and_rendered() -> None:
    proposer: Proposer = RandomProposer(random.Random(0))
    archive = _archive()
    drafts = proposer.propose(archive, 200, generation=1)
    assert len(drafts) == 200
    digests = [d.spec.digest() for d in drafts if d.spec]
    assert len(set(digests)) == 200
    assert not set(digests) & {e.spec.digest() for e in archive if e.spec}
    for d in drafts:
        assert d.proposer == "random" and d.parents == [] and d.extra == {"operator": "random"}
        assert d.motivation.startswith("Random sample of the design space")
        assert isinstance(d.spec, MixerSpec) and not d.spec.is_quadratic
        assert MixerSpec.from_dict(d.spec.to_dict()) == d.spec
        assert spec_from_source(d.code) == d.spec  # the code is the spec's rendering
    # Later calls never repeat an earlier draft, even one the driver did not keep.
    more = proposer.propose(archive, 50, generation=2)
    assert not {d.spec.digest() for d in more if d.spec} & set(digests)


def test_seeded_and_deterministic() -> None:
    def draw(seed: int) -> list[str]:
        return [d.spec.digest() for d in RandomProposer(random.Random(seed)).propose([], 20, 1)
                if d.spec]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_covers_the_choices_of_every_field() -> None:
    drafts = RandomProposer(random.Random(1)).propose([], 200, 1)
    for name in FIELDS:
        seen = {getattr(d.spec, name) for d in drafts}
        choices = [c for c in OPTIONS[name] if not (name == "update_rule" and c == "softmax")]
        # 200 uniform draws miss a choice of <= 7 with negligible probability; fields whose
        # choices are rarely active (e.g. gate_normalizer needs a logsigmoid decay) still
        # show several values.
        assert len(seen) >= min(len(choices), 2), (name, seen)
        if name in ("update_rule", "feature_map", "decay", "beta", "out_gate", "local_path",
                    "key_ratio", "value_ratio", "conv_size", "position", "qk_norm"):
            assert seen == set(choices), (name, seen)


def test_quadratic_only_when_allowed() -> None:
    proposer = RandomProposer(random.Random(2), allow_quadratic=True)
    # Softmax is a rare corner of the space (about 1 draw in 400): draw enough to meet it.
    assert any(proposer.sample().is_quadratic for _ in range(5000))


def test_rendered_drafts_pass_the_static_gates() -> None:
    cfg = CheckConfig()
    for d in RandomProposer(random.Random(5)).propose([], 8, 1):
        verdict, tree = parse_gate(d.code.encode(), Path("mixer.py"), cfg)
        assert verdict.passed and tree is not None, verdict.message
        verdict = imports_gate(tree, Path("mixer.py"), cfg)
        assert verdict.passed, verdict.message


def test_the_independent_control_mutates_the_base_alone_whatever_the_archive() -> None:
    """Every draft's only parent is the base baseline, and a scored archive changes nothing:
    the same seed gives the same drafts with or without results to learn from."""
    from evolve.search.independent import IndependentProposer
    from evolve.search.mutator import MutatorConfig

    base = ArchiveEntry(id="c000000", spec=BASELINE_SPECS["deltanet"], fitness=0.0,
                        name="deltanet")
    strong = ArchiveEntry(id="c000009", spec=BASELINE_SPECS["gla"].replace(value_ratio=2),
                          fitness=0.5, parents=["c000000"])
    plain = IndependentProposer(MutatorConfig(), "deltanet", random.Random(3)).propose(
        [base], 6, generation=1)
    rich = IndependentProposer(MutatorConfig(), "deltanet", random.Random(3)).propose(
        [base, strong], 6, generation=4)
    assert [d.spec for d in plain] == [d.spec for d in rich] and len(plain) == 6
    assert all(d.parents == ["c000000"] and d.proposer == "independent" for d in plain)
    assert len({d.spec.digest() for d in plain}) == 6
    try:
        IndependentProposer(MutatorConfig(), "kda_missing", random.Random(0)).propose([base], 1, 1)
    except ValueError as exc:
        assert "search.baselines" in str(exc)
    else:
        raise AssertionError("a base the run does not train must be an error")
