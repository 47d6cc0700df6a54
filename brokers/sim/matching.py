"""Matching kernel of the simulated venue: find the first tick at which a working order executes.

Working orders live in parallel arrays (one slot each). Rules, for tick k with bid/ask (equal to the
trade price for trade ticks):
- market: executes at the first tick with ts >= eligible_ts;
- limit buy: the ask is at or below the limit (quotes), or a trade prints strictly below it (trades:
  touching the limit says nothing about our place in the queue); sell mirrored;
- stop buy: triggers when the ask (or the trade) is at or above the trigger; sell mirrored.
"""

from __future__ import annotations

import numba
import numpy as np

TYPE_MARKET, TYPE_LIMIT, TYPE_STOP = 0, 1, 2
ORDER_TYPES = {"market": TYPE_MARKET, "limit": TYPE_LIMIT, "stop": TYPE_STOP}


@numba.njit(cache=True, inline="always")
def _executes(otype, side, oprice, eligible_ts, t, b, a, is_quotes):
    if t < eligible_ts:
        return False
    if otype == TYPE_MARKET:
        return True
    if otype == TYPE_LIMIT:
        if side > 0:
            return a <= oprice if is_quotes else a < oprice
        return b >= oprice if is_quotes else b > oprice
    # stop
    if side > 0:
        return a >= oprice
    return b <= oprice


@numba.njit(cache=True)
def next_execution(ts, bid, ask, is_quotes, start, stop, active, otype, oside, oprice, oeligible):
    """First tick index in [start, stop) at which any active order executes, else `stop`."""
    n_slots = active.shape[0]
    any_active = False
    for j in range(n_slots):
        if active[j]:
            any_active = True
            break
    if not any_active:
        return stop
    for k in range(start, stop):
        t = ts[k]
        b = bid[k]
        a = ask[k]
        for j in range(n_slots):
            if active[j] and _executes(otype[j], oside[j], oprice[j], oeligible[j], t, b, a, is_quotes):
                return k
    return stop


@numba.njit(cache=True)
def executing_slots(t, b, a, is_quotes, active, otype, oside, oprice, oeligible, out):
    """Write into `out` the slots that execute at one tick; return how many."""
    m = 0
    for j in range(active.shape[0]):
        if active[j] and _executes(otype[j], oside[j], oprice[j], oeligible[j], t, b, a, is_quotes):
            out[m] = j
            m += 1
    return m


def warmup() -> None:
    ts = np.array([0, 1], dtype=np.int64)
    px = np.array([100, 101], dtype=np.int64)
    active = np.array([True, False])
    otype = np.array([TYPE_LIMIT, TYPE_MARKET], dtype=np.int8)
    oside = np.array([1, -1], dtype=np.int8)
    oprice = np.array([101, 0], dtype=np.int64)
    oel = np.zeros(2, dtype=np.int64)
    for q in (False, True):
        next_execution(ts, px, px, q, 0, 2, active, otype, oside, oprice, oel)
        executing_slots(0, 100, 100, q, active, otype, oside, oprice, oel, np.zeros(2, dtype=np.int64))
