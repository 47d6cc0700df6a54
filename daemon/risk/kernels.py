"""Pre-trade risk kernels: order checks, Kelly sizing, ATR stop/target planning, Wilder ATR.

All kernels are `numba.njit(cache=True)` on plain scalars and int64/float64 arrays. Prices are int64
ticks, quantities int64 lots, money inside `check_order` is int64 micro-units of the account currency
(1e-6; equity is floored onto that grid, which only ever errs toward rejecting). Percent limits arrive
as integer ppm of a fraction (2 % = 20,000 ppm, `config.pct_to_ppm`), so every limit comparison is
exact integer arithmetic, free of overflow for |values| < 2**63 (see `_mul_ppm_floor`).

`check_order` runs the checks in this fixed order and returns the first that fails as
(rule code, offending value, limit) -- (PASS, 0, 0) when all pass. An order is *reducing* when it
trades against a non-zero position by at most its size (it cannot open or flip); every other order
is an *entry*. Exposure is counted in the worst case: `working_same` is the leaves of the working
orders on the order's side that are not reduce-only (they may all fill first), so before the order
the worst-case position is w = position + side*working_same and after it w' = w + side*qty;
"increasing" means |w'| > |w|. With no working orders this is the plain |position + side*qty|.

  1 invalid_order      side not +-1, qty <= 0 or reference price <= 0
  2 reduce_only        a reduce-only order that is not reducing        (value qty, limit |position|)
  3 kill_switch        halted, entries only                              (1, 0)
  4 max_order_qty      entries only, qty > max_order_lots
  5 max_position       entries only, increasing and |w'| > max_position_lots
  6 no_market_data     no last trade price yet
  7 stale_data         entries only, now - last tick ts > stale_ns > 0  (seconds)
  8 max_notional       entries only, increasing and |w'| * ref ticks * tick_value > max_notional;
                       exact as |w'| > floor(max_notional / tick_value) // ref  (currency)
  9 portfolio_notional entries only, increasing and |w'| > port_notional_tl // ref, where
                       port_notional_tl = floor((portfolio max gross - the other instruments'
                       gross) / tick_value)  (value port_other + |w'| ref tick_value, port_max)
 10 price_collar       |ref - last| > floor(last * collar_ppm / 1e6)     (percent of last)
 11 order_rate         entries only: the last `cap` approved orders (cap = len(order_ts)) all lie
                       within (now - window, now]: a sliding window on event time  (orders, cap)
 12 daily_loss         entries only, day_start - equity >= day_start * ppm / 1e6   (percent)
 13 max_drawdown       entries only, peak - equity >= peak * ppm / 1e6; the engine trips the kill
                       switch on it                                       (percent)

Reducing orders are exits: no size, position, notional, rate or loss rule may refuse them, so a
halted daemon can always flatten (the venue may cap an order's size; nothing here splits one). They
are still collared and still recorded in the rate ring (they count against later entries).

`kelly_size` is spec 1.2 "[P] Sizing algorithm" steps 1-6 and the position/order/notional caps of
step 7 (the risk-score multipliers need the risk state vector and come later):
  p = (wins + 15) / (N + 30);  b = mean win / mean |loss| (N >= 30) else m_TP / m_SL;
  f_K = (b p - (1 - p)) / b, size 0 `no_edge` if f_K <= 0 (b = inf gives f_K = p);
  f = min(k f_K clip(sigma_base / max(sigma_now, 1e-9), 0.25, 2), per-trade cap), ratio 1 when
  either sigma is unknown (NaN or sigma_base <= 0);
  lots = floor(f equity / (D_stop ticks * tick_value + c)), c = round-trip fee per *lot* (the
  engine converts the configured per-contract fee: c = fee x lot_size), then min with
  max_order_lots, max_position_lots - |position| and floor(max_notional / tick_value) // ref -
  |position| (the hot path passes the worst-case position and the tighter of the instrument and
  portfolio notional headroom).

`atr_stop_target` is spec 1.3 "[P] Unified model" steps 1, 2 and 6: D = m_SL ATR (1 + 0.5 vp),
T = m_TP ATR with m_SL clamped to [0.5, 3], m_TP to [1, 5], vp to [0, 1]; no valid ATR -> no entry.
Both distances are floored to whole ticks (at least 1), which puts the stop and the target on the
protective side (closer to the entry) of the exact levels.

`wilder_atr_update`: TR = max(H - L, |H - C_prev|, |L - C_prev|) (H - L on the first bar);
ATR = mean of the first n TRs, then ATR_t = (ATR_{t-1} (n - 1) + TR_t) / n; NaN until n bars.
"""

from __future__ import annotations

import math

import numba
import numpy as np

PPM = 1_000_000

# ---- check_order rule codes, in check order
PASS = 0
INVALID_ORDER = 1
REDUCE_ONLY = 2
KILL_SWITCH = 3
MAX_ORDER_QTY = 4
MAX_POSITION = 5
NO_MARKET_DATA = 6
STALE_DATA = 7
MAX_NOTIONAL = 8
PORTFOLIO_NOTIONAL = 9
PRICE_COLLAR = 10
ORDER_RATE = 11
DAILY_LOSS = 12
MAX_DRAWDOWN = 13
RULE_NAMES: tuple[str, ...] = (
    "", "invalid_order", "reduce_only", "kill_switch", "max_order_qty", "max_position",
    "no_market_data", "stale_data", "max_notional", "portfolio_notional", "price_collar",
    "order_rate", "daily_loss", "max_drawdown",
)
I64_MAX = 2**63 - 1  # "no limit" for the int64 limit slots

# ---- kelly_size reasons
SIZE_OK = 0
SIZE_NO_EDGE = 1  # f_K <= 0 (or not a number)
SIZE_NO_STOP = 2  # stop distance or reference price not positive
SIZE_RISK_BUDGET = 3  # f * equity buys less than one contract's stop risk
SIZE_NO_HEADROOM = 4  # position or notional limits leave no room
SIZE_REASONS: tuple[str, ...] = ("", "no_edge", "no_stop", "risk_budget", "no_headroom")

# ---- atr_stop_target codes
PLAN_OK = 0
PLAN_NO_ATR = 1
PLAN_BAD_PRICE = 2  # entry <= 0, bad side, or a level would fall to <= 0 ticks

M_SL_LO, M_SL_HI = 0.5, 3.0
M_TP_LO, M_TP_HI = 1.0, 5.0
VOL_RATIO_LO, VOL_RATIO_HI = 0.25, 2.0
SIGMA_FLOOR = 1e-9
_MAX_DIST = 9.0e15  # distances beyond this cannot be a valid level; keeps float->int safe


@numba.njit(cache=True)
def _mul_ppm_floor(x: int, ppm: int) -> int:
    """floor(x * ppm / 1e6) for x >= 0 and 0 <= ppm <= 1e6, without overflowing int64."""
    return (x // PPM) * ppm + ((x % PPM) * ppm) // PPM


@numba.njit(cache=True)
def _mul_ppm_ceil(x: int, ppm: int) -> int:
    """ceil(x * ppm / 1e6) for x >= 0 and 0 <= ppm <= 1e6, without overflowing int64."""
    return (x // PPM) * ppm + ((x % PPM) * ppm + PPM - 1) // PPM


@numba.njit(cache=True)
def loss_reaches(ref_u: int, equity_u: int, ppm: int) -> bool:
    """True when ref - equity >= ref * ppm / 1e6 (exactly); always True when ref <= 0."""
    if ref_u <= 0:
        return True
    return ref_u - equity_u >= _mul_ppm_ceil(ref_u, ppm)


@numba.njit(cache=True)
def is_reducing(side: int, qty: int, position: int) -> bool:
    return position != 0 and side * position < 0 and qty <= abs(position)


@numba.njit(cache=True)
def check_order(side: int, qty: int, position: int, reduce_only: bool, ref_ticks: int,
                last_ticks: int, last_ts_ns: int, now_ns: int, tick_value: float, halted: bool,
                equity_u: int, day_start_u: int, peak_u: int,
                order_ts: np.ndarray, order_count: int,
                max_order_lots: int, max_position_lots: int, max_notional_tl: int,
                max_notional: float, collar_ppm: int, daily_loss_ppm: int, max_drawdown_ppm: int,
                rate_window_ns: int, stale_ns: int, working_same: int = 0,
                port_notional_tl: int = I64_MAX, port_other: float = 0.0,
                port_max: float = 0.0) -> tuple[int, float, float]:
    """Run the pre-trade checks in the documented order; see the module docstring."""
    if (side != 1 and side != -1) or qty <= 0 or ref_ticks <= 0:
        return INVALID_ORDER, float(qty), float(ref_ticks)
    reducing = position != 0 and side * position < 0 and qty <= abs(position)
    worst = position + side * working_same  # every same-side working order filled first
    new_abs = abs(worst + side * qty)
    entry_up = not reducing and new_abs > abs(worst)  # an entry that grows worst-case exposure
    if reduce_only and not reducing:
        return REDUCE_ONLY, float(qty), float(abs(position))
    if halted and not reducing:
        return KILL_SWITCH, 1.0, 0.0
    if not reducing and qty > max_order_lots:
        return MAX_ORDER_QTY, float(qty), float(max_order_lots)
    if entry_up and new_abs > max_position_lots:
        return MAX_POSITION, float(new_abs), float(max_position_lots)
    if last_ticks <= 0:
        return NO_MARKET_DATA, 0.0, 0.0
    if not reducing and stale_ns > 0 and now_ns - last_ts_ns > stale_ns:
        return STALE_DATA, (now_ns - last_ts_ns) * 1e-9, stale_ns * 1e-9
    # x * ref > M  <=>  x > M // ref for integers: exact, no overflow (M < 0 rejects any x >= 0)
    if entry_up and new_abs > max_notional_tl // ref_ticks:
        return MAX_NOTIONAL, float(new_abs) * float(ref_ticks) * tick_value, max_notional
    if entry_up and new_abs > port_notional_tl // ref_ticks:
        return (PORTFOLIO_NOTIONAL, port_other + float(new_abs) * float(ref_ticks) * tick_value,
                port_max)
    diff = abs(ref_ticks - last_ticks)
    if diff > _mul_ppm_floor(last_ticks, collar_ppm):
        return PRICE_COLLAR, 100.0 * diff / last_ticks, collar_ppm / 1e4
    cap = order_ts.shape[0]
    if not reducing and order_count >= cap and \
            now_ns - order_ts[order_count % cap] < rate_window_ns:
        return ORDER_RATE, float(cap), float(cap)
    if not reducing:
        if loss_reaches(day_start_u, equity_u, daily_loss_ppm):
            value = 100.0 * (day_start_u - equity_u) / day_start_u if day_start_u > 0 else 100.0
            return DAILY_LOSS, value, daily_loss_ppm / 1e4
        if loss_reaches(peak_u, equity_u, max_drawdown_ppm):
            value = 100.0 * (peak_u - equity_u) / peak_u if peak_u > 0 else 100.0
            return MAX_DRAWDOWN, value, max_drawdown_ppm / 1e4
    return PASS, 0.0, 0.0


@numba.njit(cache=True)
def record_order(order_ts: np.ndarray, order_count: int, now_ns: int) -> int:
    """Store an approved order's time in the rate-limit ring; returns the new count."""
    order_ts[order_count % order_ts.shape[0]] = now_ns
    return order_count + 1


@numba.njit(cache=True)
def _clip(x: float, lo: float, hi: float) -> float:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


@numba.njit(cache=True)
def kelly_fraction_of(n_trades: int, wins: int, losses: int, sum_win: float, sum_loss: float,
                      m_tp: float, m_sl: float) -> float:
    """Uncapped Kelly f_K from the shrunk win rate and the payoff ratio (spec 1.2 steps 1-3)."""
    p = (wins + 15.0) / (n_trades + 30.0)
    if n_trades >= 30:
        if wins <= 0 or not sum_win > 0.0:
            return -(1.0 - p)  # b = 0: no edge
        mean_loss = sum_loss / losses if losses > 0 else 0.0
        if not mean_loss > 0.0:
            return p  # b = inf (no losses, or losses too small to represent)
        b = (sum_win / wins) / mean_loss
        if not b < math.inf:
            return p
        if not b > 0.0:
            return -(1.0 - p)
    else:
        b = _clip(m_tp, M_TP_LO, M_TP_HI) / _clip(m_sl, M_SL_LO, M_SL_HI)
    return (b * p - (1.0 - p)) / b


@numba.njit(cache=True)
def kelly_size(n_trades: int, wins: int, losses: int, sum_win: float, sum_loss: float,
               m_tp: float, m_sl: float, kelly_fraction: float, sigma_base: float,
               sigma_now: float, max_risk_frac: float, equity: float, stop_ticks: int,
               tick_value: float, fee_rt: float, ref_ticks: int, max_notional_tl: int,
               max_order_lots: int, max_position_lots: int,
               position: int) -> tuple[int, int, float]:
    """Lots for an entry: returns (lots, reason code, f). `sum_loss` is the sum of |losses|."""
    f_k = kelly_fraction_of(n_trades, wins, losses, sum_win, sum_loss, m_tp, m_sl)
    if not f_k > 0.0:
        return 0, SIZE_NO_EDGE, f_k
    ratio = 1.0
    if sigma_base > 0.0 and not math.isnan(sigma_now):
        ratio = _clip(sigma_base / max(sigma_now, SIGMA_FLOOR), VOL_RATIO_LO, VOL_RATIO_HI)
    f = min(kelly_fraction * f_k * ratio, max_risk_frac)
    if stop_ticks <= 0 or ref_ticks <= 0:
        return 0, SIZE_NO_STOP, f
    risk_per_lot = stop_ticks * tick_value + fee_rt
    budget = f * equity
    if not budget > 0.0 or not risk_per_lot > 0.0:
        return 0, SIZE_RISK_BUDGET, f
    raw = np.floor(budget / risk_per_lot)  # float: math.floor returns an int64 that can wrap
    if raw < 1.0:
        return 0, SIZE_RISK_BUDGET, f
    held = abs(position)
    cap = min(max_order_lots, max_position_lots - held, max_notional_tl // ref_ticks - held)
    if cap <= 0:
        return 0, SIZE_NO_HEADROOM, f
    if raw < cap:  # compare as float first: raw may exceed int64
        return int(raw), SIZE_OK, f
    return cap, SIZE_OK, f


@numba.njit(cache=True)
def atr_stop_target(side: int, entry_ticks: int, atr_ticks: float, m_sl: float, m_tp: float,
                    vol_percentile: float) -> tuple[int, int, int, int]:
    """(code, stop ticks, target ticks, stop distance ticks) for an entry at `entry_ticks`."""
    if not (atr_ticks > 0.0) or math.isinf(atr_ticks):
        return PLAN_NO_ATR, 0, 0, 0
    if entry_ticks <= 0 or (side != 1 and side != -1):
        return PLAN_BAD_PRICE, 0, 0, 0
    vp = 0.0 if math.isnan(vol_percentile) else _clip(vol_percentile, 0.0, 1.0)
    d = _clip(m_sl, M_SL_LO, M_SL_HI) * atr_ticks * (1.0 + 0.5 * vp)
    t = _clip(m_tp, M_TP_LO, M_TP_HI) * atr_ticks
    if d >= _MAX_DIST or t >= _MAX_DIST:
        return PLAN_BAD_PRICE, 0, 0, 0
    # floor toward the entry (the protective side); 1e-9 absorbs float noise such as 5.9999999
    dist = max(1, int(np.floor(d + 1e-9)))
    tdist = max(1, int(np.floor(t + 1e-9)))
    stop = entry_ticks - side * dist
    target = entry_ticks + side * tdist
    if stop <= 0 or target <= 0:
        return PLAN_BAD_PRICE, 0, 0, 0
    return PLAN_OK, stop, target, dist


@numba.njit(cache=True)
def wilder_atr_update(state: np.ndarray, high: float, low: float, close: float,
                      period: int) -> float:
    """Feed one bar. `state` float64[4] = [atr, bars seen, previous close, TR sum while warming],
    all zeros to start. Returns the ATR (same units as the prices) or NaN before `period` bars."""
    n = state[1]
    if n == 0.0:
        tr = high - low
    else:
        pc = state[2]
        tr = max(high - low, abs(high - pc), abs(low - pc))
    if n < period:
        state[3] += tr
        if n + 1.0 == period:
            state[0] = state[3] / period
    else:
        state[0] = (state[0] * (period - 1) + tr) / period
    state[1] = n + 1.0
    state[2] = close
    if n + 1.0 >= period:
        return state[0]
    return np.nan


def warmup() -> None:
    """Compile every kernel on tiny inputs (cache=True makes later processes load, not compile)."""
    ring = np.zeros(2, dtype=np.int64)
    check_order(1, 1, 0, False, 100, 100, 0, 1, 1.0, False, 10**12, 10**12, 10**12, ring, 0,
                5, 10, 10**9, 1e9, 50_000, 20_000, 50_000, 60_000_000_000, 0)
    check_order(1, 1, 0, False, 100, 100, 0, 1, 1.0, False, 10**12, 10**12, 10**12, ring, 0,
                5, 10, 10**9, 1e9, 50_000, 20_000, 50_000, 60_000_000_000, 0, 0, I64_MAX, 0.0,
                0.0)
    record_order(ring, 0, 1)
    kelly_size(0, 0, 0, 0.0, 0.0, 3.0, 1.5, 0.25, np.nan, np.nan, 0.02, 1e5, 6, 12.5, 0.0,
               100, 10**9, 5, 10, 0)
    atr_stop_target(1, 100, 4.0, 1.5, 3.0, 0.0)
    state = np.zeros(4, dtype=np.float64)
    wilder_atr_update(state, 101.0, 99.0, 100.0, 14)
    is_reducing(1, 1, -1)
    loss_reaches(100, 99, 20_000)
