"""The engine's run-time fill of the raw 257-value vector x (spec decision.md 4.0, decision/layout.py).

One preallocation-free pass per closed 5-minute bar: slices are copied straight from the matrices.
Values are raw (not z-scored): every agent z-scores x with the statistics in its own checkpoint.
`decision/features.py` (the data side) builds the same vector for training; the engine takes its
`feature_vector` when given one (`DecisionEngine(feature_fn=...)`) so the two cannot drift; this
fallback follows the layout literally and is what the tests and fakes use.
"""

from __future__ import annotations

import math

import numpy as np

from himari.decision.layout import (FEATURE_DIM, STRATEGIC_TAIL_ROWS, TACTICAL_TAIL_ROWS,
                                    X_POSITION, X_REGIME, X_STRATEGIC, X_TACTICAL, X_TIME)

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
    out[0] = target_sharpe
    out[X_TACTICAL] = tactical[-TACTICAL_TAIL_ROWS:].reshape(-1)
    if strategic is None:
        out[X_STRATEGIC] = 0.0
    else:
        out[X_STRATEGIC] = strategic[-STRATEGIC_TAIL_ROWS:].reshape(-1)
    reg = out[X_REGIME]
    reg[:] = 0.0
    reg[regime] = 1.0
    pos = out[X_POSITION]
    pos[0] = (position > 0) - (position < 0)
    pos[1] = unrealized_atr
    pos[2] = min(bars_in_position / 100.0, 1.0)
    pos[3] = drawdown_buffer
    out[X_TIME] = time_features(ts_ns)
    return out


def new_vector() -> np.ndarray:
    return np.zeros(FEATURE_DIM, dtype=np.float32)
