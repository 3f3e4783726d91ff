"""The driver's CHECK step: a proposal's gates in the sandbox, and, for a file the model wrote,
the engineer's repair of a failing gate.

`Driver` derives from `CheckSteps`; these methods use its store, config and model agents.
"""

from __future__ import annotations

from typing import Any

from evolve.gates.check import check_candidate, check_file
from evolve.state.layout import CandidatePaths


MAX_INCOMPLETE_GATES = 3
"""Sandbox failures on one candidate before it is rejected rather than retried."""


class CheckSteps:
    """Gating and repair, as steps of the driver (see the module docstring)."""

    def _gate(self, cid: str) -> None:
        folder = self.store.candidate(cid).dir
        report = check_candidate(folder, self.cfg.checks, model=self._model_cfg())
        if report.sandbox.get("incomplete"):
            # The sandbox itself failed: leave it proposed and retry later, a few times only,
            # since a crash that repeats on the same file is the file's doing.
            tries = 1 + sum(1 for e in self.store.events()
                            if e.get("event") == "gate_incomplete" and e.get("candidate") == cid)
            self.store.record("gate_incomplete", cid, detail=str(report.sandbox)[:500])
            if tries >= MAX_INCOMPLETE_GATES:
                self.store.record("checked", cid, passed=False, failed_gate="sandbox",
                                  error=f"the gates' sandbox failed {tries} times on this file: "
                                        f"{str(report.sandbox)[:400]}")
            return
        failed = report.verdict(report.failed_gate) if report.failed_gate else None
        if failed is not None and self._repairable(cid):
            # The engineer gets the failing gate's message; a verified fix replaces mixer.py
            # (a crash mid-repair leaves the candidate proposed: it is gated, and repaired, again).
            outcome = self.agents.repair(folder, report.failed_gate, failed.message,
                                         self._check_scratch)
            self.store.record("repair", cid, ok=outcome["ok"], attempts=outcome["attempts"],
                              gate=report.failed_gate, error=outcome["error"][:500] or None)
            if outcome["ok"]:
                report = check_candidate(folder, self.cfg.checks, model=self._model_cfg())
                failed = report.verdict(report.failed_gate) if report.failed_gate else None
        self.store.record("checked", cid, passed=report.passed,
                          failed_gate=report.failed_gate,
                          error=failed.message[:500] if failed else None)

    def _model_cfg(self) -> Any:
        track = self.cfg.train.lm or self.cfg.train.mqar
        assert track is not None
        return track.model

    def _repairable(self, cid: str) -> bool:
        """Only whole files the model wrote are repaired: a spec-mode file is a rendering of
        its spec, and editing the code would make the two disagree."""
        if self.agents is None or self.cfg.search.max_repairs < 1:
            return False
        prop = self.view.proposal(cid)
        repairs = sum(1 for e in self.store.events()
                      if e.get("event") == "repair" and e.get("candidate") == cid)
        # llm-code, and the model's independent control in code mode (llm-code-independent).
        return str(prop.get("proposer", "")).startswith("llm-code") \
            and repairs < self.cfg.search.max_repairs

    def _check_scratch(self, folder: Any) -> tuple[bool, str, str]:
        report = check_file(CandidatePaths.of(folder).mixer, self.cfg.checks, model=self._model_cfg())
        gate = report.failed_gate
        return report.passed, gate or "", report.verdict(gate).message if gate else ""
