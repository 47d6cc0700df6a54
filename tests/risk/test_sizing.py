"""Kelly sizing (spec 1.2), ATR stop/target planning (spec 1.3) and the Wilder ATR."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.risk import kernels as K


def stats_for(p: float, b: float, n: int = 70) -> tuple[int, int, int, float, float]:
    """Trade stats whose shrunk win rate is p and whose payoff ratio is b (mean loss 1)."""
    wins = round(p * (n + 30) - 15)
    losses = n - wins
    return n, wins, losses, b * wins, float(losses)


# ---------------------------------------------------------------- f_K (spec 5 item 8 vectors)

@pytest.mark.parametrize("p,b,f_k", [(0.6, 1.5, 1 / 3), (0.8, 2.0, 0.70), (0.4, 1.0, -0.20)])
def test_uncapped_kelly_vectors(p: float, b: float, f_k: float) -> None:
    n, wins, losses, sw, sl = stats_for(p, b)
    assert (wins + 15) / (n + 30) == pytest.approx(p)
    assert K.kelly_fraction_of(n, wins, losses, sw, sl, 3.0, 1.5) == pytest.approx(f_k)


def test_win_rate_is_shrunk_toward_half() -> None:
    # 30 trades, 30 wins: p = 45/60 = 0.75, not 1.0; b = 1 -> f_K = 0.5
    assert K.kelly_fraction_of(30, 30, 0, 30.0, 0.0, 3.0, 1.5) == pytest.approx(0.75)  # b = inf
    assert K.kelly_fraction_of(40, 30, 10, 30.0, 10.0, 3.0, 1.5) == pytest.approx(
        (1.0 * 45 / 70 - 25 / 70) / 1.0)


def test_fewer_than_30_trades_use_the_plan_ratio() -> None:
    # N = 29 with great stats still uses b = m_TP / m_SL = 2 and p = (29 + 15) / 59
    p = 44 / 59
    assert K.kelly_fraction_of(29, 29, 0, 290.0, 0.0, 3.0, 1.5) == pytest.approx(
        (2 * p - (1 - p)) / 2)
    # N = 0: p = 0.5, b = 2 -> 0.25; m_TP 1 / m_SL 3 -> b = 1/3 -> no edge
    assert K.kelly_fraction_of(0, 0, 0, 0.0, 0.0, 3.0, 1.5) == pytest.approx(0.25)
    assert K.kelly_fraction_of(0, 0, 0, 0.0, 0.0, 1.0, 3.0) < 0
    # N = 30 switches to the trade stats: all losses -> no edge
    assert K.kelly_fraction_of(30, 0, 30, 0.0, 30.0, 3.0, 1.5) < 0


# ---------------------------------------------------------------- kelly_size

def size(**over: Any) -> tuple[int, int, float]:
    args: dict[str, Any] = dict(
        n_trades=0, wins=0, losses=0, sum_win=0.0, sum_loss=0.0, m_tp=3.0, m_sl=1.5,
        kelly_fraction=0.25, sigma_base=math.nan, sigma_now=math.nan, max_risk_frac=0.02,
        equity=100_000.0, stop_ticks=10, tick_value=12.5, fee_rt=0.0, ref_ticks=10_000,
        max_notional_tl=10**12, max_order_lots=100, max_position_lots=100, position=0)
    args.update(over)
    return K.kelly_size(**args)


def test_no_edge_gives_zero() -> None:
    n, w, lo, sw, sl = stats_for(0.4, 1.0)
    assert size(n_trades=n, wins=w, losses=lo, sum_win=sw, sum_loss=sl)[:2] == (0, K.SIZE_NO_EDGE)
    assert size(m_tp=1.0, m_sl=3.0)[:2] == (0, K.SIZE_NO_EDGE)


def test_quarter_kelly_below_the_cap() -> None:
    # N = 0: f_K = 0.25 -> f = 0.0625 -> capped at 0.02; budget 2000 / 125 per lot = 16
    lots, why, f = size()
    assert (lots, why) == (16, K.SIZE_OK) and f == pytest.approx(0.02)
    # a small f_K stays under the cap: p = 0.5, b = 1.1 -> f_K = (0.55-0.5)/1.1
    f_k = 0.05 / 1.1
    lots, why, f = size(m_tp=1.1, m_sl=1.0, stop_ticks=1)
    assert f == pytest.approx(0.25 * f_k)
    assert lots == math.floor(0.25 * f_k * 100_000 / 12.5)


def test_per_trade_cap() -> None:
    assert size(max_risk_frac=0.01)[0] == 8  # 1000 / 125
    assert size(max_risk_frac=0.01)[2] == pytest.approx(0.01)


def test_volatility_ratio_is_clipped() -> None:
    f_k = 0.025 / 1.05  # p = 0.5, b = 1.05: k f_K x 2 stays under the 2 % cap
    kw = dict(m_tp=1.05, m_sl=1.0)
    assert size(sigma_base=0.01, sigma_now=0.01, **kw)[2] == pytest.approx(0.25 * f_k)
    assert size(sigma_base=0.01, sigma_now=0.02, **kw)[2] == pytest.approx(0.25 * f_k * 0.5)
    assert size(sigma_base=0.01, sigma_now=1.0, **kw)[2] == pytest.approx(0.25 * f_k * 0.25)
    assert size(sigma_base=0.01, sigma_now=0.001, **kw)[2] == pytest.approx(0.25 * f_k * 2.0)
    assert size(sigma_base=0.01, sigma_now=0.0, **kw)[2] == pytest.approx(0.25 * f_k * 2.0)
    assert size(sigma_base=math.nan, sigma_now=0.001, **kw)[2] == pytest.approx(0.25 * f_k)


def test_fees_and_stop_distance_divide_the_budget() -> None:
    assert size(stop_ticks=16)[0] == 10  # 2000 / 200
    assert size(stop_ticks=16, fee_rt=50.0)[0] == 8  # 2000 / 250
    assert size(stop_ticks=0)[:2] == (0, K.SIZE_NO_STOP)


def test_risk_budget_below_one_lot() -> None:
    assert size(equity=6_000.0)[:2] == (0, K.SIZE_RISK_BUDGET)  # 120 < 125
    assert size(equity=6_250.0)[:2] == (1, K.SIZE_OK)
    assert size(equity=-5.0)[:2] == (0, K.SIZE_RISK_BUDGET)


def test_caps_order_position_notional() -> None:
    assert size(max_order_lots=5)[0] == 5
    assert size(max_position_lots=10, position=7)[0] == 3
    assert size(max_position_lots=10, position=-7)[0] == 3  # |position| counts
    assert size(max_position_lots=10, position=10)[:2] == (0, K.SIZE_NO_HEADROOM)
    # notional: 40,000 tick-lots at 10,000 ticks = 4 lots; holding 1 leaves 3
    assert size(max_notional_tl=40_000, position=1)[0] == 3
    assert size(max_notional_tl=9_999)[:2] == (0, K.SIZE_NO_HEADROOM)


def test_huge_equity_does_not_overflow() -> None:
    assert size(equity=1e300, max_order_lots=5)[0] == 5


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(0, 200), st.floats(0.0, 1e4), st.floats(0.0, 1e4),
       st.integers(1, 50), st.floats(1e3, 1e7), st.integers(-12, 12))
def test_size_never_exceeds_any_cap(n: int, w: int, sw: float, sl: float, stop: int,
                                    equity: float, pos: int) -> None:
    w = min(w, n)
    lots, why, f = size(n_trades=n, wins=w, losses=n - w, sum_win=sw, sum_loss=sl,
                        stop_ticks=stop, equity=equity, position=pos, max_order_lots=5,
                        max_position_lots=10, max_notional_tl=80_000)
    assert 0 <= lots <= min(5, 10 - abs(pos), 8 - abs(pos)) or lots == 0
    assert (lots > 0) == (why == K.SIZE_OK)
    if lots:
        assert lots * (stop * 12.5) <= 0.02 * equity + 1e-6  # never risks more than the cap


# ---------------------------------------------------------------- atr_stop_target

def test_stop_target_rounded_toward_the_entry() -> None:
    # ATR 3.3 ticks: D = 4.95 -> 4 ticks, T = 9.9 -> 9 ticks
    assert K.atr_stop_target(1, 1000, 3.3, 1.5, 3.0, 0.0) == (K.PLAN_OK, 996, 1009, 4)
    assert K.atr_stop_target(-1, 1000, 3.3, 1.5, 3.0, 0.0) == (K.PLAN_OK, 1004, 991, 4)


def test_exact_multiples_are_not_lost_to_float_noise() -> None:
    # 1.5 x 4 = 6, 3 x 4 = 12; 0.1 + 0.2 style noise must not drop a tick
    assert K.atr_stop_target(1, 1000, 4.0, 1.5, 3.0, 0.0) == (K.PLAN_OK, 994, 1012, 6)
    assert K.atr_stop_target(1, 1000, 0.1 + 0.2, 10.0, 10.0, 0.0)[3] == 1  # clamped 3 x 0.3


def test_vol_percentile_widens_the_stop_only() -> None:
    # D = 1.5 x 4 x (1 + 0.5 x 1) = 9; the target stays 12
    assert K.atr_stop_target(1, 1000, 4.0, 1.5, 3.0, 1.0) == (K.PLAN_OK, 991, 1012, 9)
    assert K.atr_stop_target(1, 1000, 4.0, 1.5, 3.0, 7.0)[3] == 9  # clipped to 1
    assert K.atr_stop_target(1, 1000, 4.0, 1.5, 3.0, math.nan)[3] == 6


def test_multipliers_are_clamped() -> None:
    assert K.atr_stop_target(1, 1000, 10.0, 9.0, 9.0, 0.0) == (K.PLAN_OK, 970, 1050, 30)
    assert K.atr_stop_target(1, 1000, 10.0, 0.1, 0.1, 0.0) == (K.PLAN_OK, 995, 1010, 5)


def test_at_least_one_tick() -> None:
    assert K.atr_stop_target(1, 1000, 0.2, 1.5, 3.0, 0.0) == (K.PLAN_OK, 999, 1001, 1)


@pytest.mark.parametrize("atr", [math.nan, 0.0, -1.0, math.inf])
def test_no_atr_no_entry(atr: float) -> None:
    assert K.atr_stop_target(1, 1000, atr, 1.5, 3.0, 0.0)[0] == K.PLAN_NO_ATR


def test_levels_must_stay_positive() -> None:
    assert K.atr_stop_target(1, 5, 4.0, 1.5, 3.0, 0.0)[0] == K.PLAN_BAD_PRICE  # stop -1
    assert K.atr_stop_target(-1, 12, 4.0, 1.5, 3.0, 0.0)[0] == K.PLAN_BAD_PRICE  # target 0
    assert K.atr_stop_target(1, 0, 4.0, 1.5, 3.0, 0.0)[0] == K.PLAN_BAD_PRICE
    assert K.atr_stop_target(1, 100, 1e300, 1.5, 3.0, 0.0)[0] == K.PLAN_BAD_PRICE


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, -1]), st.integers(10_000, 10**7), st.floats(0.01, 500.0),
       st.floats(0.0, 6.0), st.floats(0.0, 6.0), st.floats(0.0, 1.0))
def test_levels_are_protective(side: int, entry: int, atr: float, m_sl: float, m_tp: float,
                               vp: float) -> None:
    code, stop, target, dist = K.atr_stop_target(side, entry, atr, m_sl, m_tp, vp)
    assert code == K.PLAN_OK
    d_exact = min(max(m_sl, 0.5), 3.0) * atr * (1 + 0.5 * vp)
    t_exact = min(max(m_tp, 1.0), 5.0) * atr
    assert dist == abs(entry - stop) and (entry - stop) * side > 0
    assert dist <= max(1.0, d_exact + 1e-6) and dist > d_exact - 1 - 1e-6
    assert (target - entry) * side > 0
    assert abs(target - entry) <= max(1.0, t_exact + 1e-6)


# ---------------------------------------------------------------- Wilder ATR

def ref_atr(h: np.ndarray, lo: np.ndarray, c: np.ndarray, n: int) -> list[float]:
    out: list[float] = []
    trs: list[float] = []
    atr = math.nan
    for i in range(len(h)):
        tr = h[i] - lo[i] if i == 0 else max(h[i] - lo[i], abs(h[i] - c[i - 1]),
                                              abs(lo[i] - c[i - 1]))
        trs.append(tr)
        if i + 1 == n:
            atr = sum(trs) / n
        elif i + 1 > n:
            atr = (atr * (n - 1) + tr) / n
        out.append(atr if i + 1 >= n else math.nan)
    return out


def test_wilder_atr_matches_reference_and_warms_up() -> None:
    rng = np.random.default_rng(7)
    c = 10_000 + np.cumsum(rng.integers(-5, 6, 200)).astype(np.float64)
    h = c + rng.integers(0, 6, 200)
    lo = c - rng.integers(0, 6, 200)
    state = np.zeros(4)
    got = [K.wilder_atr_update(state, h[i], lo[i], c[i], 14) for i in range(200)]
    want = ref_atr(h, lo, c, 14)
    assert all(math.isnan(x) for x in got[:13]) and not math.isnan(got[13])
    np.testing.assert_allclose(got[13:], want[13:], rtol=1e-12)


def test_wilder_atr_first_value_is_the_simple_mean() -> None:
    state = np.zeros(4)
    bars = [(12.0, 10.0, 11.0), (13.0, 11.0, 12.0), (12.0, 8.0, 9.0)]
    vals = [K.wilder_atr_update(state, *b, 3) for b in bars]
    # TR: 2, max(2, 2, 0) = 2, max(4, 0, 4) = 4 -> mean 8/3; next: gap up 9 -> 20 - 9 = 11
    assert vals[2] == pytest.approx(8 / 3)
    assert K.wilder_atr_update(state, 20.0, 19.0, 19.5, 3) == pytest.approx((8 / 3 * 2 + 11) / 3)
