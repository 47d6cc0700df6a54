"""The market regime of spec decision.md 4.0 (G5) and its target Sharpe (D9).

crisis (0) if volatility_30 >= the stored 95th percentile of training volatility_30; else the
strategic ensemble's argmax mapped SELL -> bearish (1), HOLD -> neutral (2), BUY -> bullish (3)
when its confidence (max probability) > 0.65; else neutral. No strategic ensemble (None), no
strategic matrix, or an ensemble that fails -> neutral unless crisis. volatility_30 is v_rel of the
strategic matrix context (v30 / v240; 1.0 until valid).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from himari.decision import layout as L

CRISIS_PERCENTILE = 95.0
CONFIDENCE = 0.65

# (strategic matrix (48, 13), synergy or None, ts_ns) -> probabilities (SELL, HOLD, BUY), or an
# object with a `probs` attribute.
StrategicEnsemble = Callable[[np.ndarray, Any, int], Any]


def crisis_threshold(volatility_30: np.ndarray, percentile: float = CRISIS_PERCENTILE) -> float:
    """The crisis threshold from training volatility_30 values (ready bars only, please)."""
    v = np.asarray(volatility_30, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise ValueError("crisis_threshold: no finite volatility_30 values")
    return float(np.percentile(v, percentile))


def target_sharpe(regime: int) -> float:
    """D9's table; an unknown regime gets the default (neutral) target."""
    if 0 <= regime < len(L.TARGET_SHARPE):
        return L.TARGET_SHARPE[regime]
    return L.TARGET_SHARPE[L.DEFAULT_REGIME]


def regime_from(volatility_30: float, threshold: float, probs: Any = None) -> int:
    """The rule for one bar, given the ensemble's probabilities (or None)."""
    if math.isfinite(volatility_30) and volatility_30 >= threshold:
        return L.CRISIS
    if probs is None:
        return L.NEUTRAL
    p = np.asarray(getattr(probs, "probs", probs), np.float64)
    if p.shape != (3,) or not np.isfinite(p).all():
        return L.NEUTRAL
    a = int(np.argmax(p))
    return a + 1 if p[a] > CONFIDENCE else L.NEUTRAL


def regimes(volatility_30: np.ndarray, threshold: float,
            probs: np.ndarray | None = None) -> np.ndarray:
    """Vectorised rule: (n,) regimes from (n,) volatility_30 and optional (n, 3) probabilities."""
    v = np.asarray(volatility_30, np.float64)
    out = np.full(v.shape, L.NEUTRAL, np.int64)
    if probs is not None:
        p = np.asarray(probs, np.float64)
        if p.shape != (len(v), 3):
            raise ValueError(f"probs has shape {p.shape}, expected ({len(v)}, 3)")
        a = p.argmax(axis=1)
        sure = p.max(axis=1) > CONFIDENCE
        out[sure] = a[sure] + 1
    out[np.isfinite(v) & (v >= threshold)] = L.CRISIS
    return out


class RegimeRule:
    """The run-time rule with the stored threshold and an optional strategic ensemble."""

    def __init__(self, threshold: float, ensemble: StrategicEnsemble | None = None) -> None:
        if not math.isfinite(threshold):
            raise ValueError(f"crisis threshold is not finite: {threshold!r}")
        self.threshold = threshold
        self.ensemble = ensemble
        self.ensemble_errors = 0

    def __call__(self, volatility_30: float, strategic: np.ndarray | None = None,
                 synergy: Any = None, ts_ns: int = 0) -> tuple[int, float]:
        """(regime, target Sharpe) for one bar."""
        probs = None
        crisis = math.isfinite(volatility_30) and volatility_30 >= self.threshold
        if not crisis and self.ensemble is not None and strategic is not None:
            try:
                probs = self.ensemble(strategic, synergy, ts_ns)
            except Exception:  # noqa: BLE001 - a failing ensemble means "no opinion": neutral
                self.ensemble_errors += 1
                probs = None
        regime = regime_from(volatility_30, self.threshold, probs)
        return regime, target_sharpe(regime)
