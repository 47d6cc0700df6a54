"""The engine's run-time fill of the raw 257-value vector x (spec decision.md 4.0, decision/layout.py).

One Numba pass per closed 5-minute bar copies the matrix tails and writes the scalars.
Values are raw (not z-scored): every agent z-scores x with the statistics in its own checkpoint.
`decision/features.py` (the data side) builds the same vector for training; the engine takes its
`feature_vector` when given one (`DecisionEngine(feature_fn=...)`) so the two cannot drift; this
fallback follows the layout literally and is what the tests and fakes use.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from himari.decision.layout import FEATURE_DIM, STRATEGIC_TAIL_ROWS, TACTICAL_TAIL_ROWS

NS_PER_DAY = 86_400 * 1_000_000_000
_TWO_PI = 2.0 * math.pi


def time_features(ts_ns: int) -> tuple[float, float, float, float]:
    """sin/cos of the hour of day (fractional, UTC) and of the weekday (Monday = 0), event time."""
    day, in_day = divmod(int(ts_ns), NS_PER_DAY)
    hour = in_day / 3.6e12
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
    return (math.sin(_TWO_PI * hour / 24), math.cos(_TWO_PI * hour / 24),
            math.sin(_TWO_PI * weekday / 7), math.cos(_TWO_PI * weekday / 7))


def fill_vector(out: np.ndarray, ts_ns: int, tactical: np.ndarray, strategic: np.ndarray | None,
                regime: int, target_sharpe: float, position: int, unrealized_atr: float,
                bars_in_position: int, drawdown_buffer: float) -> np.ndarray:
    """Write x into `out` (float32, 257) and return it."""
    _fill(out, int(ts_ns), tactical, strategic if strategic is not None else _NO_STRATEGIC,
          strategic is not None, int(regime), float(target_sharpe), int(position),
          float(unrealized_atr), int(bars_in_position), float(drawdown_buffer))
    return out


_NO_STRATEGIC = np.zeros((STRATEGIC_TAIL_ROWS, 13), dtype=np.float32)


@njit(cache=True)
def _fill(out: np.ndarray, ts_ns: int, tac: np.ndarray, strat: np.ndarray, has_strat: bool,
          regime: int, sharpe: float, position: int, upnl: float, bars: int,
          dd_buffer: float) -> None:
    out[0] = sharpe
    k = 1
    for r in range(tac.shape[0] - TACTICAL_TAIL_ROWS, tac.shape[0]):
        for c in range(tac.shape[1]):
            out[k] = tac[r, c]
            k += 1
    for r in range(strat.shape[0] - STRATEGIC_TAIL_ROWS, strat.shape[0]):
        for c in range(strat.shape[1]):
            out[k] = strat[r, c] if has_strat else 0.0
            k += 1
    for j in range(4):
        out[k + j] = 1.0 if j == regime else 0.0
    k += 4
    out[k] = 1.0 if position > 0 else (-1.0 if position < 0 else 0.0)
    out[k + 1] = upnl
    out[k + 2] = min(bars / 100.0, 1.0)
    out[k + 3] = dd_buffer
    k += 4
    day = ts_ns // NS_PER_DAY
    hour = (ts_ns - day * NS_PER_DAY) / 3.6e12
    weekday = (day + 3) % 7
    out[k] = math.sin(_TWO_PI * hour / 24)
    out[k + 1] = math.cos(_TWO_PI * hour / 24)
    out[k + 2] = math.sin(_TWO_PI * weekday / 7)
    out[k + 3] = math.cos(_TWO_PI * weekday / 7)


def new_vector() -> np.ndarray:
    return np.zeros(FEATURE_DIM, dtype=np.float32)
