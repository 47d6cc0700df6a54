"""One ensemble decision and its per-voter breakdown (the decision record's `agents` list).

`DecisionEngine.decide` fills an `EnsembleDecision` with plain lists (a few voters, 3 actions);
`agents()` / `details()` turn them into the dicts the `Decision` event carries, only when asked.
"""

from __future__ import annotations

from typing import Any

from himari.decision.aggregate import StrategicResult, TacticalResult
from himari.decision.layout import ACTIONS, BUY, HOLD, REGIMES, SELL

_OK, _SKIPPED, _BENCHED, _FAILED, _TIMEOUT = 0, 1, 2, 3, 4
STATUS = ("ok", "skipped", "benched", "failed", "timeout")
_ENSEMBLE_REASON = tuple(f"ensemble {a}" for a in ACTIONS)


def _argmax3(p: list[float]) -> int:
    """argmax of a 3-way distribution, ties to HOLD."""
    if p[1] >= p[0] and p[1] >= p[2]:
        return HOLD
    return SELL if p[0] > p[2] else BUY


class EnsembleDecision:
    """One decision. `agents()` builds the per-voter breakdown (name, vote, probs, confidence,
    weight, latency_us, status) from this decision's own lists (the engine allocates fresh ones
    per decision, so a decision stays readable after the next one)."""

    __slots__ = ("action", "confidence", "base_confidence", "disagreement", "scale", "abstained",
                 "regime", "target_sharpe", "reason", "tactical", "strategic", "_names",
                 "_probs", "_conf", "_weights", "_lat", "_status")

    def __init__(self, action: int, confidence: float, reason: str, regime: int,
                 target_sharpe: float) -> None:
        self.action = action
        self.confidence = confidence
        self.base_confidence = confidence
        self.disagreement = 0.0
        self.scale = 1.0
        self.abstained = False
        self.regime = regime
        self.target_sharpe = target_sharpe
        self.reason = reason
        self.tactical: TacticalResult | None = None
        self.strategic: StrategicResult | None = None
        self._names: tuple[str, ...] = ()

    @property
    def action_name(self) -> str:
        return ACTIONS[self.action]

    def agents(self) -> list[dict[str, Any]]:
        out = []
        for name, p, conf, w, lat, st in zip(self._names, self._probs, self._conf, self._weights,
                                             self._lat, self._status):
            if st == _OK:
                out.append({"name": name, "vote": ACTIONS[_argmax3(p)], "probs": p,
                            "confidence": conf,
                            "weight": w, "latency_us": lat // 1000, "status": "ok"})
            else:
                out.append({"name": name, "vote": None, "probs": None, "confidence": None,
                            "weight": 0.0, "latency_us": lat // 1000, "status": STATUS[st]})
        return out

    def details(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "action": self.action_name, "agents": self.agents(),
            "disagreement": self.disagreement, "scale": self.scale,
            "base_confidence": self.base_confidence, "abstained": self.abstained,
            "regime": REGIMES[self.regime], "target_sharpe": self.target_sharpe}
        if self.tactical is not None:
            t = self.tactical
            d["tactical"] = {"scores": [round(v, 6) for v in t.scores], "best": ACTIONS[t.best],
                             "execute": t.execute, "entry_mode": t.entry_mode,
                             "penalised": t.penalised, "reason": t.reason}
        if self.strategic is not None:
            s = self.strategic
            d["strategic"] = {"probs": [round(v, 6) for v in s.probs],
                              "confidence": round(s.confidence, 6),
                              "uncertainty": round(s.uncertainty, 6),
                              "should_proceed": s.should_proceed,
                              "dominant_signal": s.dominant_signal,
                              "uncertainty_source": s.uncertainty_source}
        return d
