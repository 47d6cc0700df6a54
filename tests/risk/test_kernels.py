"""check_order: every rule at its boundary, the fixed order, and a pure-Python reference compared on
random inputs; the exact integer helpers; the fused hot path against the separate kernels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.risk import hotpath as H
from himari.daemon.risk import kernels as K

SEC = 1_000_000_000
WINDOW = 60 * SEC
U = 1_000_000  # micro-units per currency unit


def base(**over: Any) -> dict[str, Any]:
    """A passing 1-lot buy from flat at the last price; ES-like: tick value 12.5."""
    args: dict[str, Any] = dict(
        side=1, qty=1, position=0, reduce_only=False, ref_ticks=10_000, last_ticks=10_000,
        last_ts_ns=0, now_ns=SEC, tick_value=12.5, halted=False, equity_u=100_000 * U,
        day_start_u=100_000 * U, peak_u=100_000 * U, order_ts=np.zeros(3, dtype=np.int64),
        order_count=0, max_order_lots=5, max_position_lots=10, max_notional_tl=10**9,
        max_notional=1.25e10, collar_ppm=50_000, daily_loss_ppm=20_000,
        max_drawdown_ppm=50_000, rate_window_ns=WINDOW, stale_ns=0)
    args.update(over)
    return args


def check(**over: Any) -> tuple[int, float, float]:
    return K.check_order(**base(**over))


def code(**over: Any) -> int:
    return check(**over)[0]


# ---------------------------------------------------------------- pure-Python reference

def ref_check(a: dict[str, Any]) -> tuple[int, float, float]:
    """The documented rules written plainly with unbounded Python ints (no overflow tricks)."""
    side, qty, pos, ref, last = a["side"], a["qty"], a["position"], a["ref_ticks"], a["last_ticks"]
    if side not in (1, -1) or qty <= 0 or ref <= 0:
        return K.INVALID_ORDER, float(qty), float(ref)
    reducing = pos != 0 and (side > 0) != (pos > 0) and qty <= abs(pos)
    before = pos + side * a.get("working_same", 0)  # worst case: same-side working orders fill
    new = before + side * qty
    increasing = not reducing and abs(new) > abs(before)
    if a["reduce_only"] and not reducing:
        return K.REDUCE_ONLY, float(qty), float(abs(pos))
    if a["halted"] and not reducing:
        return K.KILL_SWITCH, 1.0, 0.0
    if not reducing and qty > a["max_order_lots"]:
        return K.MAX_ORDER_QTY, float(qty), float(a["max_order_lots"])
    if increasing and abs(new) > a["max_position_lots"]:
        return K.MAX_POSITION, float(abs(new)), float(a["max_position_lots"])
    if last <= 0:
        return K.NO_MARKET_DATA, 0.0, 0.0
    age = a["now_ns"] - a["last_ts_ns"]
    if not reducing and a["stale_ns"] > 0 and age > a["stale_ns"]:
        return K.STALE_DATA, age / 1e9, a["stale_ns"] / 1e9
    if increasing and abs(new) * ref > a["max_notional_tl"]:
        return K.MAX_NOTIONAL, abs(new) * ref * a["tick_value"], a["max_notional"]
    if increasing and abs(new) * ref > a.get("port_notional_tl", K.I64_MAX):
        return (K.PORTFOLIO_NOTIONAL, a.get("port_other", 0.0) + abs(new) * ref * a["tick_value"],
                a.get("port_max", 0.0))
    if abs(ref - last) * 1_000_000 > a["collar_ppm"] * last:
        return K.PRICE_COLLAR, 100.0 * abs(ref - last) / last, a["collar_ppm"] / 1e4
    ring, n = a["order_ts"], a["order_count"]
    recent = [t for t in ring[: min(n, len(ring))] if a["now_ns"] - t < a["rate_window_ns"]]
    if not reducing and n >= len(ring) and len(recent) >= len(ring):
        return K.ORDER_RATE, float(len(ring)), float(len(ring))
    eq, day, peak = a["equity_u"], a["day_start_u"], a["peak_u"]
    if not reducing:
        if day <= 0 or (day - eq) * 1_000_000 >= day * a["daily_loss_ppm"]:
            return K.DAILY_LOSS, (100.0 * (day - eq) / day if day > 0 else 100.0), \
                a["daily_loss_ppm"] / 1e4
        if peak <= 0 or (peak - eq) * 1_000_000 >= peak * a["max_drawdown_ppm"]:
            return K.MAX_DRAWDOWN, (100.0 * (peak - eq) / peak if peak > 0 else 100.0), \
                a["max_drawdown_ppm"] / 1e4
    return K.PASS, 0.0, 0.0


@st.composite
def order_inputs(draw: st.DrawFn) -> dict[str, Any]:
    cap = draw(st.integers(1, 5))
    now = draw(st.integers(0, 10**12))
    # ring times as the engine writes them: non-decreasing, <= now
    count = draw(st.integers(0, 12))
    times = sorted(draw(st.lists(st.integers(max(0, now - 2 * WINDOW), now), min_size=count,
                                 max_size=count)))
    ring = np.zeros(cap, dtype=np.int64)
    for i, t in enumerate(times):
        ring[i % cap] = t
    day = draw(st.integers(-10, 10**13))
    return base(
        side=draw(st.sampled_from([1, -1, 1, -1, 0])), qty=draw(st.integers(-1, 12)),
        position=draw(st.integers(-15, 15)), reduce_only=draw(st.booleans()),
        ref_ticks=draw(st.integers(-5, 20_000)), last_ticks=draw(st.integers(0, 20_000)),
        last_ts_ns=now - draw(st.integers(0, 10 * SEC)), now_ns=now,
        tick_value=draw(st.sampled_from([12.5, 0.01, 1.0, 0.3])), halted=draw(st.booleans()),
        equity_u=draw(st.integers(-10**6, 10**13)), day_start_u=day,
        peak_u=draw(st.integers(-10, 10**13)), order_ts=ring, order_count=count,
        max_order_lots=draw(st.integers(1, 8)), max_position_lots=draw(st.integers(1, 12)),
        max_notional_tl=draw(st.integers(0, 200_000)), collar_ppm=draw(st.integers(0, 10**6)),
        daily_loss_ppm=draw(st.integers(0, 10**6)), max_drawdown_ppm=draw(st.integers(0, 10**6)),
        stale_ns=draw(st.sampled_from([0, SEC, 5 * SEC])), working_same=draw(st.integers(0, 12)),
        port_notional_tl=draw(st.sampled_from([K.I64_MAX, -1, 0, 50_000, 150_000])),
        port_other=draw(st.sampled_from([0.0, 1234.5])), port_max=1e6)


@settings(max_examples=300, deadline=None)
@given(order_inputs())
def test_check_order_matches_reference(args: dict[str, Any]) -> None:
    got = K.check_order(**args)
    want = ref_check(args)
    assert got[0] == want[0]
    assert got[1] == pytest.approx(want[1], rel=1e-12)
    assert got[2] == pytest.approx(want[2], rel=1e-12)


# ---------------------------------------------------------------- exact integer helpers

@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(0, 10**6))
def test_ppm_helpers_are_exact_without_overflow(x: int, ppm: int) -> None:
    assert K._mul_ppm_floor(x, ppm) == (x * ppm) // 10**6
    assert K._mul_ppm_ceil(x, ppm) == -((-x * ppm) // 10**6)


def test_loss_reaches_boundary() -> None:
    day = 100_000 * U
    assert K.loss_reaches(day, 98_000 * U, 20_000)  # exactly 2 %
    assert not K.loss_reaches(day, 98_000 * U + 1, 20_000)  # one micro-unit short
    assert K.loss_reaches(0, 5, 20_000)  # no equity basis: block


# ---------------------------------------------------------------- each rule at its boundary

def test_all_pass() -> None:
    assert check() == (K.PASS, 0.0, 0.0)


def test_invalid_orders() -> None:
    assert code(side=0) == K.INVALID_ORDER
    assert code(qty=0) == K.INVALID_ORDER
    assert code(ref_ticks=0) == K.INVALID_ORDER


def test_reduce_only() -> None:
    assert code(reduce_only=True, position=3, side=-1, qty=3) == K.PASS
    assert check(reduce_only=True, position=3, side=-1, qty=4) == (K.REDUCE_ONLY, 4.0, 3.0)
    assert code(reduce_only=True, position=3, side=1, qty=1) == K.REDUCE_ONLY
    assert code(reduce_only=True, position=0) == K.REDUCE_ONLY


def test_kill_switch_blocks_entries_only() -> None:
    assert code(halted=True) == K.KILL_SWITCH
    assert code(halted=True, position=4, side=-1, qty=4) == K.PASS  # closes
    assert code(halted=True, position=-4, side=1, qty=2) == K.PASS  # reduces a short
    assert code(halted=True, position=4, side=-1, qty=5) == K.KILL_SWITCH  # would flip


def test_kill_switch_comes_first() -> None:
    assert code(halted=True, qty=9) == K.KILL_SWITCH


def test_max_order_qty_boundary() -> None:
    assert code(qty=5) == K.PASS
    assert check(qty=6) == (K.MAX_ORDER_QTY, 6.0, 5.0)
    # an exit is never refused for its size (issue 12 item 4); a flip is an entry
    assert code(qty=6, position=10, side=-1) == K.PASS
    assert code(qty=6, position=10, side=-1, reduce_only=True) == K.PASS
    assert code(qty=6, position=5, side=-1) == K.MAX_ORDER_QTY


def test_max_position_boundary_and_only_when_increasing() -> None:
    assert code(position=8, qty=2) == K.PASS  # 10
    assert check(position=8, qty=3) == (K.MAX_POSITION, 11.0, 10.0)
    assert check(position=-8, side=-1, qty=3) == (K.MAX_POSITION, 11.0, 10.0)
    # already above the limit (limit lowered): reducing passes, adding does not
    assert code(position=12, side=-1, qty=1) == K.PASS
    assert code(position=-12, side=1, qty=2, max_order_lots=5) == K.PASS
    # a flip to the same size does not increase |position|
    assert code(position=-2, side=1, qty=4) == K.PASS


def test_no_market_data() -> None:
    assert code(last_ticks=0) == K.NO_MARKET_DATA
    assert code(last_ticks=0, position=2, side=-1, qty=1) == K.NO_MARKET_DATA


def test_stale_data_boundary_entries_only() -> None:
    stale = 5 * SEC
    assert code(stale_ns=stale, last_ts_ns=0, now_ns=stale) == K.PASS
    got = check(stale_ns=stale, last_ts_ns=0, now_ns=stale + 1)
    assert got[0] == K.STALE_DATA and got[2] == 5.0
    assert code(stale_ns=stale, now_ns=stale + 1, position=2, side=-1, qty=1) == K.PASS
    assert code(stale_ns=0, now_ns=10**15) == K.PASS  # disabled


def test_max_notional_exact_boundary() -> None:
    # $500,000 at tick value 12.5 = 40,000 tick-lots.
    # 2 lots x 20,000 ticks x 12.5 = 500,000 exactly: allowed; 20,001 ticks is over
    lim = dict(max_notional_tl=40_000, max_notional=500_000.0)
    assert code(qty=2, ref_ticks=20_000, last_ticks=20_000, **lim) == K.PASS
    got = check(qty=2, ref_ticks=20_001, last_ticks=20_001, **lim)
    assert got == (K.MAX_NOTIONAL, 2 * 20_001 * 12.5, 500_000.0)
    # counts the resulting position, and only when it grows
    assert code(qty=1, position=1, ref_ticks=20_001, last_ticks=20_001, **lim) == K.MAX_NOTIONAL
    assert code(qty=1, position=3, side=-1, ref_ticks=20_001, last_ticks=20_001, **lim) == K.PASS


def test_max_notional_no_overflow_on_absurd_price() -> None:
    assert code(ref_ticks=10**17, last_ticks=10**17, qty=5) == K.MAX_NOTIONAL


def test_price_collar_boundary_both_sides() -> None:
    # 5 % of 10,000 = 500 ticks
    assert code(ref_ticks=10_500) == K.PASS
    assert code(ref_ticks=9_500, side=-1) == K.PASS
    got = check(ref_ticks=10_501)
    assert got[0] == K.PRICE_COLLAR and got[1] == pytest.approx(5.01) and got[2] == 5.0
    assert code(ref_ticks=9_499) == K.PRICE_COLLAR
    # floor: 5 % of 10,010 = 500.5 -> 500 ticks allowed
    assert code(last_ticks=10_010, ref_ticks=10_510) == K.PASS
    assert code(last_ticks=10_010, ref_ticks=10_511) == K.PRICE_COLLAR
    # reducing orders are collared too
    assert code(ref_ticks=10_501, position=2, side=-1, qty=1) == K.PRICE_COLLAR


def test_order_rate_sliding_window() -> None:
    ring = np.array([0, 10 * SEC, 20 * SEC], dtype=np.int64)  # 3 approved, cap 3
    assert code(order_ts=ring, order_count=2, now_ns=30 * SEC) == K.PASS  # only 2 so far
    assert check(order_ts=ring, order_count=3, now_ns=WINDOW - 1) == (K.ORDER_RATE, 3.0, 3.0)
    assert code(order_ts=ring, order_count=3, now_ns=WINDOW) == K.PASS  # first one left
    # after wrap-around the oldest of the last 3 sits at count % cap
    ring2 = np.array([70 * SEC, 10 * SEC, 20 * SEC], dtype=np.int64)  # 4 recorded
    assert code(order_ts=ring2, order_count=4, now_ns=70 * SEC - 1) == K.ORDER_RATE
    assert code(order_ts=ring2, order_count=4, now_ns=70 * SEC) == K.PASS


def test_record_order_ring() -> None:
    ring = np.zeros(2, dtype=np.int64)
    n = K.record_order(ring, 0, 5)
    n = K.record_order(ring, n, 6)
    n = K.record_order(ring, n, 7)
    assert n == 3 and list(ring) == [7, 6]


def test_daily_loss_boundary_entries_only() -> None:
    at_limit = 98_000 * U
    got = check(equity_u=at_limit, peak_u=at_limit)
    assert got[0] == K.DAILY_LOSS and got[1] == pytest.approx(2.0) and got[2] == 2.0
    assert code(equity_u=at_limit + 1, peak_u=at_limit) == K.PASS
    assert code(equity_u=at_limit, peak_u=at_limit, position=2, side=-1, qty=2) == K.PASS


def test_max_drawdown_boundary_entries_only() -> None:
    eq = 95_000 * U
    got = check(equity_u=eq, day_start_u=eq)
    assert got[0] == K.MAX_DRAWDOWN and got[1] == pytest.approx(5.0) and got[2] == 5.0
    assert code(equity_u=eq + 1, day_start_u=eq) == K.PASS
    assert code(equity_u=eq, day_start_u=eq, position=-1, side=1, qty=1) == K.PASS


def test_fixed_order_earlier_rule_wins() -> None:
    everything = dict(qty=6, position=8, last_ticks=10_000, ref_ticks=20_000, halted=False,
                      equity_u=1, order_ts=np.zeros(1, dtype=np.int64), order_count=5,
                      max_notional_tl=40_000)
    assert code(**everything) == K.MAX_ORDER_QTY
    everything["qty"] = 5
    assert code(**everything) == K.MAX_POSITION
    everything["position"] = 0
    assert code(**everything) == K.MAX_NOTIONAL
    everything["max_notional_tl"] = 10**9
    assert code(**everything) == K.PRICE_COLLAR
    everything["ref_ticks"] = 10_000
    assert code(**everything) == K.ORDER_RATE
    everything["order_count"] = 0
    assert code(**everything) == K.DAILY_LOSS
    everything["day_start_u"] = 1
    assert code(**everything) == K.MAX_DRAWDOWN


# ---------------------------------------------------------------- fused hot path

@settings(max_examples=200, deadline=None)
@given(order_inputs())
def test_screen_check_mode_equals_check_order(args: dict[str, Any]) -> None:
    ints, floats = H.new_arrays()
    slots = {H.I_MAX_ORDER: "max_order_lots", H.I_MAX_POSITION: "max_position_lots",
             H.I_MAX_NOTIONAL_TL: "max_notional_tl", H.I_COLLAR_PPM: "collar_ppm",
             H.I_DAILY_PPM: "daily_loss_ppm", H.I_DRAWDOWN_PPM: "max_drawdown_ppm",
             H.I_RATE_WINDOW_NS: "rate_window_ns", H.I_STALE_NS: "stale_ns",
             H.I_LAST_TICKS: "last_ticks", H.I_LAST_TS: "last_ts_ns", H.I_EQUITY_U: "equity_u",
             H.I_DAY_START_U: "day_start_u", H.I_PEAK_U: "peak_u", H.I_N_ORDERS: "order_count",
             H.I_PORT_NOTIONAL_TL: "port_notional_tl"}
    for slot, name in slots.items():
        ints[slot] = args[name]
    ints[H.I_HALTED] = int(args["halted"])
    floats[H.F_TICK_VALUE] = args["tick_value"]
    floats[H.F_MAX_NOTIONAL] = args["max_notional"]
    floats[H.F_PORT_OTHER] = args["port_other"]
    floats[H.F_PORT_MAX] = args["port_max"]
    ring = args["order_ts"].copy()
    got = H.screen_intent(H.MODE_CHECK, args["side"], args["qty"], args["position"],
                          args["reduce_only"], args["ref_ticks"], 0, 0, args["now_ns"], ints,
                          floats, ring, args["working_same"])
    want = K.check_order(**args)
    assert got == want[0]
    if got != K.PASS:
        assert (floats[H.F_OUT_VALUE], floats[H.F_OUT_LIMIT]) == (want[1], want[2])
        assert int(ints[H.I_N_ORDERS]) == args["order_count"]  # rejected: not recorded
    else:
        assert int(ints[H.I_N_ORDERS]) == args["order_count"] + 1
        assert ring[args["order_count"] % ring.shape[0]] == args["now_ns"]


def test_working_orders_and_portfolio_headroom_in_check_order() -> None:
    # worst case: 3 working buys + position 4 + 3 = 10 passes, 4 more is 11
    assert code(position=4, qty=3, working_same=3) == K.PASS
    assert check(position=4, qty=4, working_same=3) == (K.MAX_POSITION, 11.0, 10.0)
    # portfolio: 40,000 tick-lots of room at 20,000 ticks = 2 lots; checked after max_notional
    port = dict(ref_ticks=20_000, last_ticks=20_000, port_notional_tl=40_000,
                port_other=1_000.0, port_max=501_000.0)
    assert code(qty=2, **port) == K.PASS
    assert check(qty=3, **port) == (K.PORTFOLIO_NOTIONAL, 1_000.0 + 3 * 20_000 * 12.5, 501_000.0)
    assert code(qty=3, max_notional_tl=40_000, **port) == K.MAX_NOTIONAL
    assert code(qty=3, position=3, side=-1, **port) == K.PASS  # an exit
    assert code(qty=1, port_notional_tl=-1) == K.PORTFOLIO_NOTIONAL  # already over the limit
