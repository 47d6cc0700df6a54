"""The risk engine's hot path in one numba call: plan the bracket, size the entry, run the checks.

Why a separate fused kernel: a numba call from Python costs ~30 ns per scalar argument plus boxing
of a returned tuple, so calling `atr_stop_target`, `kelly_size` and `check_order` one by one with
~50 scalars costs several microseconds. Here the engine's state lives in two flat arrays with the
fixed slot layout below (limits, market/account state and outputs), the call takes 10 scalars and 3
arrays, returns one int, and the kernels above are inlined by numba. Semantics are exactly those of
the kernels in `kernels.py` (documented there, tested against pure-Python references there).

Modes: MODE_CHECK checks the order as given. MODE_SIZE plans stop/target with `atr_stop_target`
around the reference price (a non-zero `stop_override` / `target_override`, already checked by the
caller to lie on the right side, replaces the planned level and the size uses the stop distance
actually used), sizes with `kelly_size`, then checks. MODE_BRACKET plans stop/target for the given
quantity, then checks. On a pass the order's time goes into the rate-limit ring.

`working_same` is the leaves of the non-reduce-only working orders on the intent's side: the checks
and the sizing headroom count the worst-case position (see `kernels.py`). The portfolio notional
headroom sits in ints[I_PORT_NOTIONAL_TL] (I64_MAX = no portfolio limit), written by
`PortfolioRisk` before the call; sizing uses the tighter of it and the instrument's own.

Returns a code of SCREEN_NAMES (0 = pass; check codes 1-13 as in `kernels.RULE_NAMES`, then the
planning/sizing codes 14-18; a plan that puts a level at <= 0 ticks is `invalid_order`). Outputs:
ints[I_OUT_QTY, I_OUT_STOP, I_OUT_TARGET] (0 = none), floats[F_OUT_VALUE, F_OUT_LIMIT] = the
rejection's (value, limit), or (f, 0) for a sizing rejection.
"""

from __future__ import annotations

import numba
import numpy as np

from himari.daemon.risk import kernels as K

# ---- int64 slots: limits (fixed after construction), state, outputs
I_MAX_ORDER = 0
I_MAX_POSITION = 1
I_MAX_NOTIONAL_TL = 2  # floor(max_notional / tick_value), tick*lot units
I_COLLAR_PPM = 3
I_DAILY_PPM = 4
I_DRAWDOWN_PPM = 5
I_RATE_WINDOW_NS = 6
I_STALE_NS = 7
I_LAST_TICKS = 8
I_LAST_TS = 9
I_EQUITY_U = 10  # micro-units
I_DAY_START_U = 11
I_PEAK_U = 12
I_HALTED = 13
I_N_ORDERS = 14  # approved orders recorded in the ring so far
I_N_TRADES = 15
I_WINS = 16
I_LOSSES = 17
I_OUT_QTY = 18
I_OUT_STOP = 19
I_OUT_TARGET = 20
I_PORT_NOTIONAL_TL = 21  # portfolio gross-notional headroom for this instrument, tick*lot units
N_INTS = 22

# ---- float64 slots
F_TICK_VALUE = 0
F_MAX_NOTIONAL = 1
F_M_SL = 2
F_M_TP = 3
F_KELLY_K = 4
F_MAX_RISK = 5  # per-trade cap as a fraction
F_FEE_RT = 6
F_ATR = 7  # ticks, NaN until warm
F_VOL_PCT = 8
F_SIGMA_NOW = 9
F_SIGMA_BASE = 10
F_EQUITY = 11
F_SUM_WIN = 12
F_SUM_LOSS = 13  # sum of |losses|
F_OUT_VALUE = 14
F_OUT_LIMIT = 15
F_PORT_OTHER = 16  # the other instruments' worst-case gross notional (for the message only)
F_PORT_MAX = 17  # the portfolio's max gross notional (for the message only)
N_FLOATS = 18

MODE_CHECK = 0
MODE_SIZE = 1
MODE_BRACKET = 2

NO_ATR = K.MAX_DRAWDOWN + 1
NO_EDGE = NO_ATR + K.SIZE_NO_EDGE
NO_STOP = NO_ATR + K.SIZE_NO_STOP
RISK_BUDGET = NO_ATR + K.SIZE_RISK_BUDGET
NO_HEADROOM = NO_ATR + K.SIZE_NO_HEADROOM
SCREEN_NAMES: tuple[str, ...] = K.RULE_NAMES + (
    "no_atr", "no_edge", "no_stop", "risk_budget", "no_headroom")


def new_arrays() -> tuple[np.ndarray, np.ndarray]:
    floats = np.zeros(N_FLOATS, dtype=np.float64)
    floats[F_ATR] = floats[F_SIGMA_NOW] = floats[F_SIGMA_BASE] = np.nan
    ints = np.zeros(N_INTS, dtype=np.int64)
    ints[I_PORT_NOTIONAL_TL] = K.I64_MAX
    return ints, floats


@numba.njit(cache=True)
def screen_intent(mode: int, side: int, qty: int, position: int, reduce_only: bool,
                  ref_ticks: int, stop_override: int, target_override: int, now_ns: int,
                  ints: np.ndarray, floats: np.ndarray, ring: np.ndarray,
                  working_same: int = 0) -> int:
    ints[I_OUT_QTY] = qty
    ints[I_OUT_STOP] = 0
    ints[I_OUT_TARGET] = 0
    floats[F_OUT_VALUE] = 0.0
    floats[F_OUT_LIMIT] = 0.0
    tick_value = floats[F_TICK_VALUE]
    if mode != MODE_CHECK:
        plan, stop, target, dist = K.atr_stop_target(
            side, ref_ticks, floats[F_ATR], floats[F_M_SL], floats[F_M_TP], floats[F_VOL_PCT])
        if plan == K.PLAN_NO_ATR:
            floats[F_OUT_VALUE] = floats[F_ATR]
            return NO_ATR
        if plan != K.PLAN_OK:
            floats[F_OUT_VALUE] = float(ref_ticks)
            return K.INVALID_ORDER
        if stop_override != 0:
            stop = stop_override
            dist = abs(ref_ticks - stop_override)
        if target_override != 0:
            target = target_override
        if mode == MODE_SIZE:
            lots, why, f = K.kelly_size(
                ints[I_N_TRADES], ints[I_WINS], ints[I_LOSSES], floats[F_SUM_WIN],
                floats[F_SUM_LOSS], floats[F_M_TP], floats[F_M_SL], floats[F_KELLY_K],
                floats[F_SIGMA_BASE], floats[F_SIGMA_NOW], floats[F_MAX_RISK], floats[F_EQUITY],
                dist, tick_value, floats[F_FEE_RT], ref_ticks,
                min(ints[I_MAX_NOTIONAL_TL], ints[I_PORT_NOTIONAL_TL]), ints[I_MAX_ORDER],
                ints[I_MAX_POSITION], position + side * working_same)
            if lots <= 0:
                floats[F_OUT_VALUE] = f
                return NO_ATR + why  # SIZE_NO_EDGE..SIZE_NO_HEADROOM map onto NO_EDGE..
            qty = lots
            ints[I_OUT_QTY] = lots
        ints[I_OUT_STOP] = stop
        ints[I_OUT_TARGET] = target
    n_orders = ints[I_N_ORDERS]
    code, value, limit = K.check_order(
        side, qty, position, reduce_only, ref_ticks, ints[I_LAST_TICKS], ints[I_LAST_TS], now_ns,
        tick_value, ints[I_HALTED] != 0, ints[I_EQUITY_U], ints[I_DAY_START_U], ints[I_PEAK_U],
        ring, n_orders, ints[I_MAX_ORDER], ints[I_MAX_POSITION], ints[I_MAX_NOTIONAL_TL],
        floats[F_MAX_NOTIONAL], ints[I_COLLAR_PPM], ints[I_DAILY_PPM], ints[I_DRAWDOWN_PPM],
        ints[I_RATE_WINDOW_NS], ints[I_STALE_NS], working_same, ints[I_PORT_NOTIONAL_TL],
        floats[F_PORT_OTHER], floats[F_PORT_MAX])
    if code != K.PASS:
        floats[F_OUT_VALUE] = value
        floats[F_OUT_LIMIT] = limit
        return code
    ints[I_N_ORDERS] = K.record_order(ring, n_orders, now_ns)
    return K.PASS


def warmup() -> None:
    """Compile the kernels and the fused hot path on tiny inputs."""
    K.warmup()
    ints, floats = new_arrays()
    ints[I_MAX_ORDER], ints[I_MAX_POSITION], ints[I_MAX_NOTIONAL_TL] = 5, 10, 10**9
    floats[F_TICK_VALUE], floats[F_ATR], floats[F_M_SL], floats[F_M_TP] = 1.0, 4.0, 1.5, 3.0
    ring = np.zeros(2, dtype=np.int64)
    for mode in (MODE_CHECK, MODE_SIZE, MODE_BRACKET):
        screen_intent(mode, 1, 1, 0, False, 100, 0, 0, 1, ints, floats, ring)
        screen_intent(mode, 1, 1, 0, False, 100, 0, 0, 1, ints, floats, ring, 0)
