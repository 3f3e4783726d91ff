"""Multi-fidelity screening: asynchronous successive halving over training budgets.

    search:
      fidelity:
        rungs: [0.25]      # screen at a quarter of the budget; the whole budget is the last rung
        eta: 3             # a third of the proposals at a rung go on
        stop_margin: 1.0   # stop a training 1.0 nats above every baseline's loss

A proposal first trains to the first rung's fraction of the budget (on the whole budget's
learning-rate schedule), is evaluated there and pauses. The baselines of the run go through the
same rungs, so that a rung's fitness (against the reference baseline at the same rung) compares
like with like. A paused proposal continues (from its rung checkpoint, no step repeated) when it
is among the best 1/eta of the proposals that reached that rung so far. (An earlier version also
continued every proposal that beat every baseline at the rung: in the study's first run the
mutator's proposals, children of strong baselines, beat them at a quarter of the budget 11 times
in 14, and screening saved almost nothing.) The rule is ASHA's (Li et al.,
"A System for Massively Parallel Hyperparameter Tuning", MLSys 2020): promotions are decided as
results arrive, so no worker waits for a rung to fill; a proposal that is not promoted now may be
when more arrive.

Why not Optuna's SuccessiveHalvingPruner: it decides inside the training (`trial.should_prune()`
at each report) against other trials' intermediate values held in an Optuna storage. Here a
rung is a separate job whose result is a file, the driver is the only one who decides, and its
state is the run's journal; a pruner would need an Optuna storage beside the journal (a second
source of truth, and a database on a shared filesystem) for a rule that is ten lines. The rule
below is ASHA's promotion rule as the paper states it (`get_job` in its Algorithm 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping


@dataclass(kw_only=True)
class FidelityConfig:
    """Screening rungs (see evolve/search/fidelity.py). Off when `rungs` is empty."""

    rungs: tuple[float, ...] = ()
    """Fractions of the training budget at which proposals are screened, ascending, each in
    (0, 1); the whole budget is the last rung. Empty: every proposal trains to the full budget."""
    eta: int = 3
    """At each rung the best 1/eta of the proposals that reached it continue (ASHA's reduction
    factor)."""
    stop_margin: float | None = 1.0
    """Early termination: a proposal's training stops when its loss is above every baseline's
    loss at the same step by more than this (nats); None: only NaN or train.*.diverge_loss stop
    a training. Needs baselines that trained first (their curves set the ceiling)."""
    promotion_budget: bool = False
    """Never have promoted more than floor(n / eta) of the n proposals that reached a rung
    (synchronous successive halving's budget). ASHA alone promotes more: a proposal promoted
    while few had reached the rung stays promoted when better ones arrive (7 of 22 = 32% at
    eta 4 in the search study's seed 0, docs/RESULTS.md part 2b). With the budget, a promotable
    proposal waits until the next arrivals open a slot."""
    stop_after: float = 0.2
    """The loss ceiling applies from this fraction of a track's steps on (early losses of
    different designs are far apart and say little)."""
    rung_tracks: tuple[str, ...] = ()
    """The tracks (lm, mqar) a rung trains and scores; the others train only when a proposal
    continues, then from their first step. Empty: every track. A quarter of the tiny preset's
    400 MQAR steps is the end of its 100-step warm-up, where recall is mostly at chance:
    screening it costs half of a rung and says little, but a rung of lm alone selects for bits
    per byte alone (docs/RESULTS.md part 2b measures both)."""

    def __post_init__(self) -> None:
        self.rung_tracks = tuple(self.rung_tracks)
        unknown = [t for t in self.rung_tracks if t not in ("lm", "mqar")]
        if unknown or len(set(self.rung_tracks)) != len(self.rung_tracks):
            raise ValueError(f"fidelity.rung_tracks={list(self.rung_tracks)}: name each of lm, "
                             "mqar at most once (empty: every track)")
        self.rungs = tuple(float(r) for r in self.rungs)
        if any(not 0.0 < r < 1.0 for r in self.rungs) or list(self.rungs) != sorted(set(self.rungs)):
            raise ValueError(f"fidelity.rungs={list(self.rungs)} must be ascending, distinct "
                             "fractions of the budget in (0, 1) (the whole budget is implicit)")
        if self.eta < 2:
            raise ValueError(f"fidelity.eta={self.eta} must be at least 2")
        if self.stop_margin is not None and self.stop_margin <= 0:
            raise ValueError(f"fidelity.stop_margin={self.stop_margin} must be positive or null")
        if not 0.0 <= self.stop_after < 1.0:
            raise ValueError(f"fidelity.stop_after={self.stop_after} must lie in [0, 1)")

    @property
    def enabled(self) -> bool:
        return bool(self.rungs)

    def next_fraction(self, reached: float) -> float:
        """The fraction of the budget a training that reached `reached` (0: none) trains to."""
        return next((r for r in self.rungs if r > reached), 1.0)


def promotable(scores: Mapping[str, float], eta: int, promoted: set[str],
               budget: bool = False) -> list[str]:
    """ASHA at one rung: the candidates (of `scores`, rung fitness by id, higher is better) that
    are among the best floor(n / eta) of the n that reached the rung and were not promoted yet;
    best first. With `budget`, only as many as keep the promoted (`promoted` among `scores`)
    at most floor(n / eta)."""
    ranked = sorted(scores, key=lambda cid: (-scores[cid], cid))
    top = math.floor(len(ranked) / eta)
    chosen = [cid for cid in ranked[:top] if cid not in promoted]
    if budget:
        chosen = chosen[: max(0, top - len(promoted & set(scores)))]
    return chosen
