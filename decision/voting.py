"""D7 Sharpe-weighted voting, D8 disagreement scaling and abstention, D9 return conditioning.

D7 (spec decision.md, G37): every voter keeps a *shadow* position that follows its own argmax
(section 0: BUY / SELL go to +1 / -1 when flat or on that side, the opposite action closes, HOLD
keeps) and earns the env reward r~ (spec 4.0) of that position:
    r~_t = (pos_t (C_{t+1} - C_t) / C_t - fee |pos_t - pos_{t-1}|) / sigma_t,
sigma_t the EWMA (span 100) std of 5-minute returns, exactly as training/env.py computes it
(zero mean, bias-corrected weights, returns up to C_t, floored at 5e-5), fee 1 bp + 1 bp slippage.
Rewards are summed per UTC day (event time);
Sharpe_i = mean / sample std of the last 30 daily sums (not annualised); with fewer than 10 days
every target weight is equal; otherwise raw_i = max(Sharpe_i, 0), w*_i = raw_i / sum(raw) (equal if
all are 0), w <- 0.9 w + 0.1 w*, once per day at the first bar after 00:00 UTC. At each decision
the weights are renormalised over the voters present.

D8: s_i = p_i(BUY) - p_i(SELL); D = sum_i w_i (s_i - sbar)^2 with sbar = sum_i w_i s_i;
scale(D) = 1 below 0.2, 0.25 above 0.7, linear in between; abstain (HOLD at 0.5) iff D >= 0.5 and
the scaled confidence < 0.4.

The per-bar work is plain Python over a handful of floats (numpy only for the daily update):
with 3 actions and ~6 voters that is several times cheaper than numpy calls.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from himari.decision.layout import BUY, DEFAULT_REGIME, HOLD, SELL, TARGET_SHARPE

NS_PER_DAY = 86_400 * 1_000_000_000
WINDOW_DAYS = 30
MIN_DAYS = 10
SMOOTHING = 0.9
SIGMA_SPAN = 100
SIGMA_FLOOR = 5e-5  # training/env.py EnvConfig.sigma_floor
ABSTAIN_D = 0.5
ABSTAIN_CONF = 0.4
ABSTAIN_CONFIDENCE = 0.5


def target_sharpe(regime: int | None, override: float | None = None) -> float:
    """D9: the regime's target Sharpe (unknown regime -> the default, neutral's 2.0); an explicit
    override wins."""
    if override is not None:
        return float(override)
    if regime is None or not 0 <= regime < len(TARGET_SHARPE):
        return TARGET_SHARPE[DEFAULT_REGIME]
    return TARGET_SHARPE[regime]


def scale_for(d: float) -> float:
    """D8's confidence scale for disagreement d."""
    if d < 0.2:
        return 1.0
    if d > 0.7:
        return 0.25
    return 1.0 - 0.75 * (d - 0.2) / 0.5


def disagreement(probs: Any, weights: Any) -> float:
    """D8's weighted variance of s_i = p_i(BUY) - p_i(SELL); `weights` sum to 1."""
    s = [float(p[BUY]) - float(p[SELL]) for p in probs]
    w = [float(x) for x in weights]
    sbar = sum(wi * si for wi, si in zip(w, s))
    return sum(wi * (si - sbar) * (si - sbar) for wi, si in zip(w, s))


def shadow_target(position: int, action: int) -> int:
    """Section 0 on a one-unit shadow position."""
    if action == BUY:
        return 0 if position < 0 else 1
    if action == SELL:
        return 0 if position > 0 else -1
    return position


class Combined:
    """The result of one vote, as plain floats (3 actions and a handful of voters: plain Python
    beats numpy's per-call overhead here)."""

    __slots__ = ("probs", "action", "base_confidence", "disagreement", "scale", "confidence",
                 "abstained", "weights")

    def __init__(self, n: int) -> None:
        self.probs = [0.0, 1.0, 0.0]
        self.weights = [0.0] * n
        self.action = HOLD
        self.base_confidence = 0.0
        self.disagreement = 0.0
        self.scale = 1.0
        self.confidence = 0.0
        self.abstained = False


class SharpeVoting:
    """D7 weights with shadow returns for a fixed list of voters, plus the D8 combination."""

    def __init__(self, names: list[str] | tuple[str, ...], fee: float = 2e-4) -> None:
        self.names = tuple(names)
        n = len(self.names)
        self.fee = float(fee)
        self.weights = np.full(n, 1.0 / n) if n else np.zeros(0)
        self.shadow = [0] * n
        self._prev_shadow = [0] * n
        self._day_sum = [0.0] * n
        self._daily = np.zeros((WINDOW_DAYS, n))  # ring of the last 30 daily sums
        self.days = 0                              # completed days seen (ring fill = min(days, 30))
        self._day: int | None = None
        self._close: float | None = None
        self._ew_s = 0.0
        self._ew_w = 0.0
        self._decay = 1.0 - 2.0 / (SIGMA_SPAN + 1.0)
        self.sharpe = np.zeros(n)
        self.updates = 0
        self._w = np.zeros(n)

    def reset(self) -> None:
        self.__init__(self.names, self.fee)  # type: ignore[misc]

    # ---- D7 bookkeeping, once per closed 5-minute bar, before the vote

    def on_bar(self, ts_ns: int, close: float) -> None:
        """Credit each shadow position with the step that just closed, roll the UTC day."""
        ok = math.isfinite(close) and close > 0
        shadow, prev = self.shadow, self._prev_shadow
        if self._close is not None and ok:
            ret = (close - self._close) / self._close
            sigma = self._sigma()  # sigma of the step's start bar (floored, never 0)
            fee, day_sum = self.fee, self._day_sum
            for i in range(len(shadow)):
                day_sum[i] += (shadow[i] * ret - fee * abs(shadow[i] - prev[i])) / sigma
            self._update_sigma(ret)
        if ok:
            self._close = close
        prev[:] = shadow
        day = ts_ns // NS_PER_DAY
        if self._day is None:
            self._day = day
        elif day != self._day:
            self._close_day()
            self._day = day

    def record_votes(self, actions: Any, present: Any) -> None:
        """Move each present voter's shadow position by its own argmax (absent voters keep)."""
        shadow = self.shadow
        for i in range(len(shadow)):
            if present[i]:
                shadow[i] = shadow_target(shadow[i], int(actions[i]))

    def _sigma(self) -> float:
        """sigma_t as training/env.py: zero-mean EWMA std (span 100, bias-corrected weights) of
        the returns up to the last close, floored at SIGMA_FLOOR (the floor before any return)."""
        if self._ew_w <= 0.0:
            return SIGMA_FLOOR
        return max(math.sqrt(self._ew_s / self._ew_w), SIGMA_FLOOR)

    def _update_sigma(self, ret: float) -> None:
        self._ew_s = self._decay * self._ew_s + ret * ret
        self._ew_w = self._decay * self._ew_w + 1.0

    def _close_day(self) -> None:
        self._daily[self.days % WINDOW_DAYS] = self._day_sum
        self.days += 1
        self._day_sum = [0.0] * len(self.names)
        self.update_weights()

    def update_weights(self) -> None:
        """The daily D7 step from the ring of daily sums."""
        n = len(self.names)
        if n == 0:
            return
        k = min(self.days, WINDOW_DAYS)
        if k < MIN_DAYS:
            self.sharpe[:] = 0.0
            target = np.full(n, 1.0 / n)
        else:
            rows = self._daily[:k]
            mean = rows.mean(axis=0)
            std = rows.std(axis=0, ddof=1)
            self.sharpe = np.where(std > 1e-12, mean / np.where(std > 1e-12, std, 1.0), 0.0)
            raw = np.maximum(self.sharpe, 0.0)
            total = raw.sum()
            target = raw / total if total > 0 else np.full(n, 1.0 / n)
        self.weights = np.asarray(SMOOTHING * self.weights + (1 - SMOOTHING) * target,
                                  dtype=np.float64)
        self.updates += 1

    # ---- D7 vote + D8

    def combine(self, probs: Any, present: Any) -> Combined:
        """Weighted vote over the present voters (rows of `probs` in `names` order). `probs`
        (n, 3) and `present` (n,) may be numpy or sequences; `combine_arrays` is the hot path."""
        n = len(self.names)
        return self.combine_arrays(np.asarray(probs, dtype=np.float64).reshape(n, 3),
                                   np.asarray(present, dtype=np.float64).reshape(n))

    def combine_arrays(self, p: np.ndarray, present: np.ndarray) -> Combined:
        """`p` float64 (n, 3), `present` float64 (n,) of 0 / 1; a new `Combined` per call."""
        out = Combined(len(self.names))
        w = self._w
        res = _combine(p, present, self.weights, w)
        if res[0] < 0:
            return out  # nobody voted: HOLD at confidence 0
        out.action = res[0]
        out.base_confidence, out.disagreement, out.scale, out.confidence = res[1:5]
        out.abstained = res[5]
        out.probs = [res[6], res[7], res[8]]
        out.weights = w.tolist()
        return out


@njit(cache=True)
def _combine(p: np.ndarray, present: np.ndarray, weights: np.ndarray,
             w: np.ndarray) -> tuple[int, float, float, float, float, bool, float, float, float]:
    """D7 renormalised vote + D8 in one pass (see the module docstring); action -1: no voter."""
    n = p.shape[0]
    total = 0.0
    m = 0.0
    for i in range(n):
        w[i] = weights[i] * present[i]
        total += w[i]
        m += present[i]
    if m == 0.0:
        for i in range(n):
            w[i] = 0.0
        return -1, 0.0, 0.0, 1.0, 0.0, False, 0.0, 1.0, 0.0
    for i in range(n):
        w[i] = w[i] / total if total > 0.0 else present[i] / m
    p0 = p1 = p2 = 0.0
    sbar = 0.0
    for i in range(n):
        p0 += w[i] * p[i, 0]
        p1 += w[i] * p[i, 1]
        p2 += w[i] * p[i, 2]
        sbar += w[i] * (p[i, 2] - p[i, 0])
    d = 0.0
    for i in range(n):
        dev = p[i, 2] - p[i, 0] - sbar
        d += w[i] * dev * dev
    top = max(p0, p1, p2)
    if p1 == top or (p0 == top and p2 == top):
        best = 1  # ties go to HOLD, as in the tactical aggregation
    elif p0 == top:
        best = 0
    else:
        best = 2
    base = p0 if best == 0 else (p1 if best == 1 else p2)
    if d < 0.2:  # scale_for, inlined
        scale = 1.0
    elif d > 0.7:
        scale = 0.25
    else:
        scale = 1.0 - 0.75 * (d - 0.2) / 0.5
    conf = base * scale
    if d >= ABSTAIN_D and conf < ABSTAIN_CONF:
        return 1, base, d, scale, ABSTAIN_CONFIDENCE, True, p0, p1, p2
    return best, base, d, scale, conf, False, p0, p1, p2
