"""Relative volatility `volatility_30` (spec features.md 3.5).

Called once per closed 30-minute bar with its close C (float64); bar t counts from 0 and the log
return `r_t = ln(C_t / C_{t-1})` exists from t = 1.
- `v30 = 100 std(r_{t-short+1 .. t})` (% per bar, short = 30, sample std ddof 1), valid from t = short;
- `v240 = 100 std(r_{t-long+1 .. t})` (long = 240), valid from t = long;
- `v_rel = v30 / v240`, 1 if `v240 = 0`; matrix column `tanh(ln v_rel) = (v_rel^2 - 1)/(v_rel^2 + 1)`,
  computed in the second form so `v_rel = 0` (flat recent bars) gives -1, not a log of zero.
The event and strategic context carry `volatility_30 = v_rel` (1 until valid) and `v30` beside it.
A non-positive close gives a nan return, which makes the std nan until it leaves the window; the
assembler substitutes neutral values and counts them. The std is the numba kernel `sample_std`
(two-pass, for accuracy on near-constant returns); the state keeps the returns twice in a ring of
2 x long (the last `long` returns are one slice) and `vol_push` writes a return and takes both stds
in one call, with the same arithmetic as `sample_std` on a copy of the window.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from himari.daemon.matrices.config import VolConfig


@numba.njit(cache=True)
def sample_std(x: np.ndarray) -> float:
    """Sample standard deviation (ddof 1), two-pass; nan for fewer than 2 values."""
    n = x.shape[0]
    if n < 2:
        return np.nan
    mean = 0.0
    for i in range(n):
        mean += x[i]
    mean /= n
    ss = 0.0
    for i in range(n):
        d = x[i] - mean
        ss += d * d
    return math.sqrt(ss / (n - 1))


@numba.njit(cache=True)
def vol_push(buf: np.ndarray, head: int, r: float, short: int, long: int,
             count: int) -> tuple[float, float]:
    """Write r at ring slot `head` (buf has 2 x long slots) and return (std of the last `short`,
    std of the last `long`) over the ring's `count` returns; nan where fewer are there."""
    buf[head] = r
    buf[head + long] = r
    end = head + 1 + long
    s = sample_std(buf[end - short:end]) if count >= short else np.nan
    g = sample_std(buf[end - long:end]) if count >= long else np.nan
    return s, g


def warmup() -> None:
    sample_std(np.array([0.1, -0.1, 0.2]))
    vol_push(np.zeros(6), 0, 0.1, 2, 3, 1)


def rel_column(v_rel: float) -> float:
    """`tanh(ln v_rel)` as `(v^2 - 1)/(v^2 + 1)`; nan for nan, 1 for +inf."""
    if math.isinf(v_rel):
        return 1.0
    v2 = v_rel * v_rel
    if math.isinf(v2):
        return 1.0
    return (v2 - 1.0) / (v2 + 1.0)


class VolOutput(NamedTuple):
    v_short_pct: float  # v30, nan before t = short
    v_long_pct: float  # v240, nan before t = long
    v_rel: float  # nan before t = long
    column: float


class VolatilityState:
    def __init__(self, cfg: VolConfig | None = None) -> None:
        self.cfg = cfg = cfg or VolConfig()
        self._r = np.zeros(2 * cfg.long)  # each return at slots i and i + long
        self._head = 0
        self._count = 0
        self._prev_close: float | None = None

    def update(self, close: float) -> VolOutput:
        cfg = self.cfg
        prev = self._prev_close
        self._prev_close = close
        if prev is None:
            return VolOutput(math.nan, math.nan, math.nan, math.nan)
        r = math.log(close / prev) if close > 0.0 and prev > 0.0 else math.nan
        head = self._head
        self._head = (head + 1) % cfg.long
        if self._count < cfg.long:
            self._count += 1
        if self._count < cfg.short:
            self._r[head] = self._r[head + cfg.long] = r
            return VolOutput(math.nan, math.nan, math.nan, math.nan)
        s, g = vol_push(self._r, head, r, cfg.short, cfg.long, self._count)
        v_short = 100.0 * s
        if self._count < cfg.long:
            return VolOutput(v_short, math.nan, math.nan, math.nan)
        v_long = 100.0 * g
        if v_long == 0.0:
            v_rel = 1.0
        else:
            v_rel = v_short / v_long  # nan propagates
        return VolOutput(v_short, v_long, v_rel, rel_column(v_rel))
