"""The driver's screening steps (search.fidelity, evolve/search/fidelity.py): what fraction of
the budget a candidate trains to next, scoring a finished rung, promoting paused proposals, and
the loss ceiling that stops a proposal far behind every baseline.

`Driver` derives from `ScreeningSteps`. A rung training's result is kept as the candidate's
rung result file (the continuation replaces the result file), scored against the reference
baseline's result at the same rung, and journaled `rung` (status paused). Baselines pass every
rung at once (`rung`, then `promoted`): they are the measure, not the measured.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from evolve.search.fidelity import promotable
from evolve.search.fitness import Reference, fitness
from evolve.state.journal import DROPPED


def cpu_hours(result: dict[str, Any]) -> float:
    """The CPU-hours a result's job used (0 for a result reused from the site's cache)."""
    if result.get("reused"):
        return 0.0
    return round(float(result.get("cpu_s") or 0.0) / 3600.0, 6)


class ScreeningSteps:
    """Multi-fidelity screening, as steps of the driver (see the module docstring)."""

    def _fraction(self, cid: str) -> float:
        """The fraction of the budget `cid` trains to when it is submitted next."""
        fid = self.cfg.search.fidelity
        p = self.view.proposal(cid)
        if not fid.enabled or p.get("kind") not in ("proposal", "baseline") or p.get("preset"):
            return 1.0  # follow-ups measure a design: always the whole budget
        reached = self.view.state.candidates[cid].rungs
        return fid.next_fraction(max(reached, default=0.0))

    def _rung_results(self, name: str, preset: str | None, rung: float
                      ) -> tuple[list[dict[str, Any]], bool]:
        """Rung results of baseline `name` at `preset`, and whether more are still to come."""
        done, pending = [], False
        for c in self._baselines_named(name, preset):
            path = self.store.candidate(c.id).rung_result(rung)
            if rung in c.rungs and path.exists():
                done.append(json.loads(path.read_text()))
            elif c.status not in DROPPED:
                pending = True
        return done, pending

    def _rung_reference(self, preset: str | None, rung: float) -> Reference | None:
        done, pending = self._rung_results(self.cfg.fitness.reference, preset, rung)
        if pending or not done:
            return None
        return Reference.from_results(done, self.cfg.fitness.reference, self.cfg.fitness.mqar_pairs)

    def _score_rung(self, cid: str, result: dict[str, Any]) -> bool:
        """A finished rung training: keep its result as the rung's, score it there and pause it
        (a baseline goes on at once). False while the reference has not reached the rung."""
        rung = float(result["budget_fraction"])
        p = self.view.proposal(cid)
        paths = self.store.candidate(cid)
        if p.get("kind") == "baseline":
            self.store.write_json(paths.rung_result(rung), result)
            self.store.record("rung", cid, rung=rung, rung_fitness=None,
                              cpu_hours=cpu_hours(result))
            self.store.record("promoted", cid, fraction=self.cfg.search.fidelity.next_fraction(
                rung), reason="a baseline")
            self._remember_result(cid, result)
            return True
        reference = self._rung_reference(p.get("preset"), rung)
        if reference is None:
            return False
        score = fitness(result, reference, self.cfg.fitness)
        self.store.write_json(paths.rung_result(rung), result)
        self.store.record("rung", cid, rung=rung, rung_fitness=score["fitness"], terms=score,
                          cpu_hours=cpu_hours(result))
        self._remember_result(cid, result)
        return True

    def _rung_score(self, cid: str, rung: float) -> float | None:
        """`cid`'s fitness at `rung`: the journal's, or (a journal rebuilt by `evolve fsck`
        knows the rung but not its score) recomputed from its rung result file."""
        known = self.view.state.candidates[cid].rungs.get(rung)
        if known is not None:
            return known
        path = self.store.candidate(cid).rung_result(rung)
        reference = self._rung_reference(self.view.proposal(cid).get("preset"), rung)
        if not path.exists() or reference is None:
            return None
        return fitness(json.loads(path.read_text()), reference, self.cfg.fitness)["fitness"]

    def _promote_screened(self) -> bool:
        """ASHA's promotions at every rung, as results arrive (evolve/search/fidelity.py)."""
        fid = self.cfg.search.fidelity
        if not fid.enabled:
            return False
        state = self.view.state
        made = False
        for rung in fid.rungs:
            scores = {c.id: score for c in state.candidates.values()
                      if rung in c.rungs and self.view.kind(c.id) == "proposal"
                      and (score := self._rung_score(c.id, rung)) is not None}
            waiting = {cid for cid in scores if state.candidates[cid].status == "paused"
                       and max(state.candidates[cid].rungs) == rung}
            if not waiting:
                continue
            ranked = sorted(scores, key=lambda c: (-scores[c], c))
            for cid in promotable(scores, fid.eta, set(scores) - waiting,
                                  fid.promotion_budget):
                rank = ranked.index(cid) + 1
                self.store.record("promoted", cid, fraction=fid.next_fraction(rung), rank=rank,
                                  of=len(scores), reason=f"rank {rank} of {len(scores)} at rung "
                                  f"{rung:g} (the best {len(scores) // fid.eta} go on)")
                made = True
        return made

    def _loss_ceilings(self, preset: str | None) -> dict[str, list[list[float]]]:
        """Per track, [step, loss] pairs: every baseline's loss at that step plus
        fidelity.stop_margin, at the steps every baseline with a curve logged (from
        fidelity.stop_after of the track on)."""
        fid = self.cfg.search.fidelity
        if not fid.enabled or fid.stop_margin is None:
            return {}
        curves: list[dict[str, dict[int, float]]] = []
        for c in self.view.state.candidates.values():
            p = self.view.proposal(c.id)
            if p.get("kind") == "baseline" and p.get("preset") == preset:
                curve = _loss_curve(self.store.candidate(c.id).metrics)
                if curve:
                    curves.append(curve)
        out: dict[str, list[list[float]]] = {}
        for track, cfg in self._train_config(preset).tracks().items():
            having = [curve[track] for curve in curves if track in curve]
            if not having:
                continue
            steps = set.intersection(*(set(losses) for losses in having))
            first = cfg.total_steps() * fid.stop_after
            pairs = [[step, round(max(losses[step] for losses in having) + fid.stop_margin, 6)]
                     for step in sorted(steps) if step >= first]
            if pairs:
                out[track] = pairs
        return out


def _loss_curve(path: Any) -> dict[str, dict[int, float]]:
    """A metrics file's training loss by track and step (the last row of a step wins: a resumed
    training truncates what it repeats). Read again only when the file changed: the ceilings
    are computed for every submission, from the same few baseline files. Read-only."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    return _parsed_curve(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _parsed_curve(path: str, mtime_ns: int, size: int) -> dict[str, dict[int, float]]:
    """`_loss_curve` of the file at `path` as it was at (`mtime_ns`, `size`)."""
    del mtime_ns, size  # the cache key: a changed file is read again
    curve: dict[str, dict[int, float]] = {}
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a training still running
        if "loss" in row and "step" in row and "track" in row:
            curve.setdefault(row["track"], {})[int(row["step"])] = float(row["loss"])
    return curve
