"""NW-RQK: Nadaraya-Watson estimate with a rational quadratic kernel (spec features.md 3.2).

Called once per closed 30-minute bar with its close `C_t` (float64 price units); bar t counts from 0.
Kernel weight of the close i bars back (i = 0 is the current bar), alpha = r, bandwidth h:
`w_i = (1 + i^2 / (2 r h^2))^(-r)`, i = 0 .. x0 + 1 (27 closes with h = r = 8, x0 = 25, so
`w_i = (1 + i^2/1024)^(-8)`, `sum w = 10.967539`).

- Estimate (valid from t = x0 + 1 = 26): `y_t = sum_i w_i C_{t-i} / sum_i w_i`. One-sided: it never
  repaints.
- Slope (valid from t = 27), % per bar: `s_t = 100 (y_t - y_{t-1}) / y_{t-1}`; nan if `y_{t-1} <= 0`.
- Direction change (valid from t = 28): bullish (+1) when `y_{t-1} < y_t and y_{t-2} > y_{t-1}`,
  bearish (-1) when `y_{t-1} > y_t and y_{t-2} < y_{t-1}`, else 0.
- Matrix columns: value `clip(100 (y_t - C_t) / C_t, -P, P) / P` with P = value_clip_pct (5), in
  [-1, 1]; slope `tanh(s_t / S)` with S = slope_scale_pct (0.1), in (-1, 1). A non-positive close
  gives nan (the assembler substitutes the neutral value and counts it).

The weighted sum is the numba kernel `nw_estimate`; the state keeps the closes twice in a ring of
2 x window (the last `window` closes are one slice) and `nw_push` writes a close and estimates.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from himari.daemon.matrices.config import NwrqkConfig


def rq_weights(h: float, r: float, n: int) -> np.ndarray:
    """`w_i = (1 + i^2 / (2 r h^2))^(-r)` for i = 0 .. n-1 (index = bars back)."""
    i = np.arange(n, dtype=np.float64)
    return (1.0 + i * i / (2.0 * r * h * h)) ** (-r)


@numba.njit(cache=True)
def nw_estimate(closes: np.ndarray, weights: np.ndarray) -> float:
    """`sum_i w_i C_{t-i} / sum_i w_i` with `closes` oldest first (newest last), len == len(weights).

    Computed as `C_t + sum_i w_i (C_{t-i} - C_t) / sum_i w_i` (the same value): exact for constant
    closes and free of the cancellation in `y_t - C_t`."""
    n = weights.shape[0]
    c_now = closes[n - 1]
    num = 0.0
    den = 0.0
    for i in range(n):
        w = weights[i]
        num += w * (closes[n - 1 - i] - c_now)
        den += w
    if not den > 0.0:
        return np.nan
    return c_now + num / den


@numba.njit(cache=True)
def nw_push(buf: np.ndarray, head: int, close: float, weights: np.ndarray) -> float:
    """Write the close at ring slot `head` (buf has 2 x window slots) and estimate over the window."""
    w = weights.shape[0]
    buf[head] = close
    buf[head + w] = close
    return nw_estimate(buf[head + 1:head + 1 + w], weights)


def warmup() -> None:
    nw_estimate(np.array([1.0, 2.0, 3.0]), rq_weights(8.0, 8.0, 3))
    nw_push(np.zeros(6), 0, 1.0, rq_weights(8.0, 8.0, 3))


def value_column(y: float, close: float, clip_pct: float) -> float:
    if not close > 0.0:
        return math.nan
    pct = 100.0 * (y - close) / close
    return min(max(pct, -clip_pct), clip_pct) / clip_pct


def slope_column(slope_pct: float, scale_pct: float) -> float:
    return math.tanh(slope_pct / scale_pct)


class NwrqkOutput(NamedTuple):
    y: float  # nan before value_valid_from
    slope_pct: float  # nan before slope_valid_from
    change: int  # +1 bullish, -1 bearish, 0 none
    value_col: float
    slope_col: float


class NwrqkState:
    """NW-RQK on one bar series; `update(close)` once per closed bar."""

    def __init__(self, cfg: NwrqkConfig | None = None) -> None:
        self.cfg = cfg = cfg or NwrqkConfig()
        self.weights = rq_weights(cfg.h, cfg.r, cfg.window)
        self._buf = np.zeros(2 * cfg.window)  # each close at slots i and i + window
        self._head = 0
        self._n = 0
        self._y1 = math.nan  # y_{t-1}
        self._y2 = math.nan  # y_{t-2}
        self._n_y = 0

    def update(self, close: float) -> NwrqkOutput:
        cfg = self.cfg
        w = cfg.window
        head = self._head
        self._head = (head + 1) % w
        if self._n < w - 1:
            self._n += 1
            self._buf[head] = self._buf[head + w] = close
            return NwrqkOutput(math.nan, math.nan, 0, math.nan, math.nan)
        self._n = w
        y = nw_push(self._buf, head, close, self.weights)
        y1, y2 = self._y1, self._y2
        n_y = self._n_y = min(self._n_y + 1, 3)
        self._y1, self._y2 = y, y1
        slope = math.nan
        change = 0
        if n_y >= 2:
            slope = 100.0 * (y - y1) / y1 if y1 > 0.0 else math.nan
        if n_y == 3:
            if y1 < y and y2 > y1:
                change = 1
            elif y1 > y and y2 < y1:
                change = -1
        return NwrqkOutput(y, slope, change, value_column(y, close, cfg.value_clip_pct),
                           slope_column(slope, cfg.slope_scale_pct))
