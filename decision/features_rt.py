"""The engine's run-time fill of the raw 257-value vector x (spec decision.md 4.0, layout.py).

One Numba pass per closed 5-minute bar copies the matrix tails and writes the scalars.
Values are raw (not z-scored): every agent z-scores x with the statistics in its own checkpoint.
`decision/features.py` builds the same vector for training (`feature_vector`, `feature_matrix`);
this is its run-time twin in one Numba pass (a few us instead of a few dozen numpy calls), and a
test checks the two agree bit for bit on random inputs, so training and trading cannot disagree.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from himari.decision.features import STRATEGIC_NEUTRAL, UPNL_CLIP
from himari.decision.layout import FEATURE_DIM, STRATEGIC_TAIL_ROWS, TACTICAL_TAIL_ROWS

NS_PER_DAY = 86_400 * 1_000_000_000
HOUR_NS = 3_600 * 1_000_000_000


def time_features(ts_ns: int) -> tuple[float, float, float, float]:
    """sin/cos of the hour of day (fractional, UTC) and of the weekday (Monday = 0), event time;
    the same arithmetic as decision/features.py."""
    ts = int(ts_ns)
    a_h = ((ts % NS_PER_DAY) / HOUR_NS) * (2.0 * math.pi / 24.0)
    a_d = float((ts // NS_PER_DAY + 3) % 7) * (2.0 * math.pi / 7.0)  # 1970-01-01 was a Thursday
    return math.sin(a_h), math.cos(a_h), math.sin(a_d), math.cos(a_d)


def fill_vector(out: np.ndarray, ts_ns: int, tactical: np.ndarray, strategic: np.ndarray | None,
                regime: int, target_sharpe: float, position: int, unrealized_atr: float,
                bars_in_position: int, drawdown_buffer: float) -> np.ndarray:
    """Write x into `out` (float32, 257) and return it: `features.feature_vector` for the same
    inputs (strategic None -> the neutral matrix; PnL / ATR clipped to +-20, bars / 100 capped
    at 1 and 0 when flat, drawdown buffer clipped to [0, 1]), bit for bit (tested)."""
    _fill(out, int(ts_ns), tactical, strategic if strategic is not None else _NEUTRAL,
          int(regime), float(target_sharpe), int(position), float(unrealized_atr),
          float(bars_in_position), float(drawdown_buffer))
    return out


_NEUTRAL = np.tile(STRATEGIC_NEUTRAL, (STRATEGIC_TAIL_ROWS, 1)).astype(np.float32)


@njit(cache=True)
def _fill(out: np.ndarray, ts_ns: int, tac: np.ndarray, strat: np.ndarray, regime: int,
          sharpe: float, position: int, upnl: float, bars: float, dd_buffer: float) -> None:
    out[0] = sharpe
    k = 1
    for r in range(tac.shape[0] - TACTICAL_TAIL_ROWS, tac.shape[0]):
        for c in range(tac.shape[1]):
            out[k] = tac[r, c]
            k += 1
    for r in range(strat.shape[0] - STRATEGIC_TAIL_ROWS, strat.shape[0]):
        for c in range(strat.shape[1]):
            out[k] = strat[r, c]
            k += 1
    for j in range(4):
        out[k + j] = 1.0 if j == regime else 0.0
    k += 4
    sign = 1.0 if position > 0 else (-1.0 if position < 0 else 0.0)
    out[k] = sign
    out[k + 1] = min(max(upnl, -UPNL_CLIP), UPNL_CLIP) if sign != 0.0 else 0.0
    out[k + 2] = min(max(bars, 0.0) / 100.0, 1.0) if sign != 0.0 else 0.0
    out[k + 3] = min(max(dd_buffer, 0.0), 1.0)
    k += 4
    a_h = ((ts_ns % NS_PER_DAY) / HOUR_NS) * (2.0 * math.pi / 24.0)
    a_d = float((ts_ns // NS_PER_DAY + 3) % 7) * (2.0 * math.pi / 7.0)
    out[k] = math.sin(a_h)
    out[k + 1] = math.cos(a_h)
    out[k + 2] = math.sin(a_d)
    out[k + 3] = math.cos(a_d)


def new_vector() -> np.ndarray:
    return np.zeros(FEATURE_DIM, dtype=np.float32)
