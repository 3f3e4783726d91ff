"""The driver's use of the site's result cache (evolve.state.result_cache): a training whose
mixer file, resolved training config (seed included) and library versions match one already
finished, in this run or another under the same root, is not trained again.

`Driver` derives from `ReuseSteps`. Before a group is submitted, each candidate's key is looked
up; a hit writes the cached result file (with `reused`: key and source) and curve into the
candidate's folder and journals `reused` (status done, no job); scoring then treats it as any
finished training. After a training of this run is scored, its result is stored under its key.
"""

from __future__ import annotations

import shutil
from typing import Any

from evolve.state.layout import result_cache_dir
from evolve.state.result_cache import ResultCache, training_key, versions


class ReuseSteps:
    """Result reuse, as steps of the driver (see the module docstring)."""

    def _result_cache(self) -> ResultCache | None:
        """The site's result cache (beside this run's folder); None with reuse turned off."""
        if not self.reuse_results:
            return None
        return ResultCache(result_cache_dir(self.store.root.parent))

    def _training_key(self, cid: str, train_cfg: dict[str, Any]) -> str:
        code = self.store.candidate(cid).mixer.read_text(encoding="utf-8")
        # The loss ceiling is left out: a training it did not stop is the training without it,
        # and one it stopped failed (failed trainings are not stored).
        plain = {k: ({**v, "loss_ceiling": []} if isinstance(v, dict) and "loss_ceiling" in v
                     else v) for k, v in train_cfg.items()}
        return training_key(code, plain, versions())

    def _reuse_results(self, cids: list[str], train_cfg: dict[str, Any]) -> list[str]:
        """`cids` less those whose training the cache already holds (journaled `reused`)."""
        cache = self._result_cache()
        if cache is None:
            return cids
        left = []
        for cid in cids:
            if self.reuse_kinds is not None and self.view.kind(cid) not in self.reuse_kinds:
                left.append(cid)
                continue
            key = self._training_key(cid, train_cfg)
            hit = cache.get(key)
            if hit is None:
                left.append(cid)
                continue
            paths = self.store.candidate(cid)
            if hit["metrics"] is not None:
                paths.train.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(hit["metrics"], paths.metrics)
            self.store.write_json(paths.result, {**hit["result"], "reused": {
                "key": key, "source": hit["source"]}})
            self.store.record("reused", cid, key=key, source=hit["source"], gpu_hours=0.0)
        return left

    def _remember_result(self, cid: str, result: dict[str, Any]) -> None:
        """Store a scored training of this run in the cache (not one it reused)."""
        cache = self._result_cache()
        if cache is None or result.get("reused") or result.get("status") != "ok":
            return
        p = self.view.proposal(cid)
        train_cfg = self._submitted_config(p.get("preset") or None,
                                           p.get("seed", self.cfg.search.seed),
                                           float(result.get("budget_fraction", 1.0)))
        cache.put(self._training_key(cid, train_cfg), result, self.store.candidate(cid).metrics,
                  source=str(self.store.candidate(cid).dir))
