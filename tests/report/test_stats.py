"""Daily-return statistics: the same numbers as empyrical-reloaded on constructed series, the
calendar choice, and no annualised Sharpe on a short sample."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pytest

from himari.daemon.report import stats

DAY = stats.DAY_NS
MONDAY_2024_01_01 = 1_704_067_200_000_000_000  # 2024-01-01 00:00 UTC was a Monday


def curve_from_daily(r: np.ndarray, cash: float, day_ns: np.ndarray) -> tuple[np.ndarray, ...]:
    """An equity curve with two samples a day (06:00 and 18:00 UTC) whose daily returns are `r`
    (the 06:00 sample is a decoy: only the day's last equity counts)."""
    eq = cash * np.cumprod(1.0 + r)
    ts = np.empty(2 * r.shape[0], dtype=np.int64)
    ts[0::2] = day_ns + 6 * 3600 * 10**9
    ts[1::2] = day_ns + 18 * 3600 * 10**9
    values = np.empty(2 * r.shape[0])
    values[0::2] = eq * 0.97  # a dip inside the day that the daily series must ignore
    values[1::2] = eq
    return ts, values


def returns(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0006, 0.011, n)


@pytest.mark.parametrize("weekends,periods", [(True, 365), (False, 252)])
def test_statistics_match_empyrical(weekends: bool, periods: int) -> None:
    n = 300
    if weekends:  # every calendar day: crypto
        days = MONDAY_2024_01_01 + np.arange(n, dtype=np.int64) * DAY
    else:  # Monday..Friday only
        all_days = MONDAY_2024_01_01 + np.arange(n * 2, dtype=np.int64) * DAY
        days = all_days[((all_days // DAY + 3) % 7) < 5][:n]
    r = returns(n, seed=7)
    ts, eq = curve_from_daily(r, 100_000.0, days)
    perf = stats.performance(ts, eq, 100_000.0)
    assert perf["calendar"] == ("24/7" if weekends else "sessions")
    assert perf["periods_per_year"] == periods
    assert perf["daily_returns"] == n
    daily = stats.daily_returns(ts, eq, 100_000.0)
    np.testing.assert_allclose(daily.returns, r, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(daily.day_ns, days)
    expected = {
        "sharpe": empyrical.sharpe_ratio(r, annualization=periods),
        "sortino": empyrical.sortino_ratio(r, annualization=periods),
        "annual_return": empyrical.annual_return(r, annualization=periods),
        "annual_volatility": empyrical.annual_volatility(r, annualization=periods),
        "calmar": empyrical.calmar_ratio(r, annualization=periods),
        "max_drawdown_daily": empyrical.max_drawdown(r),
    }
    for key, want in expected.items():
        assert perf[key] == pytest.approx(want, rel=1e-7), key
    assert "daily returns" in perf["sharpe_note"] and f"sqrt({periods})" in perf["sharpe_note"]


def test_a_losing_series_matches_empyrical_too() -> None:
    r = returns(60, seed=3) - 0.004  # mostly losing days: negative Sharpe, Sortino and Calmar
    assert stats.sharpe(r, 252) == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-9)
    assert stats.sharpe(r, 252) < 0
    assert stats.sortino(r, 252) == pytest.approx(empyrical.sortino_ratio(r), rel=1e-9)
    assert stats.calmar(r, 252) == pytest.approx(empyrical.calmar_ratio(r), rel=1e-9)
    assert stats.max_drawdown_of_returns(r) == pytest.approx(empyrical.max_drawdown(r), rel=1e-9)


def test_rolling_sharpe_matches_empyrical() -> None:
    r = returns(80, seed=5)
    got = stats.rolling_sharpe(r, 20, 365)
    want = np.asarray(empyrical.roll_sharpe_ratio(r, 20, annualization=365))
    assert np.isnan(got[:19]).all()
    np.testing.assert_allclose(got[19:], want[-61:], rtol=1e-9)


def test_daily_returns_take_each_utc_days_last_equity() -> None:
    h = 3600 * 10**9
    d0 = MONDAY_2024_01_01
    ts = np.array([d0 + 1 * h, d0 + 23 * h, d0 + DAY + 0 * h, d0 + DAY + 5 * h, d0 + 3 * DAY + h],
                  dtype=np.int64)
    eq = np.array([101.0, 110.0, 99.0, 121.0, 60.5])
    daily = stats.daily_returns(ts, eq, 100.0)
    np.testing.assert_array_equal(daily.day_ns, [d0, d0 + DAY, d0 + 3 * DAY])  # no data: no day
    np.testing.assert_array_equal(daily.equity, [110.0, 121.0, 60.5])
    np.testing.assert_allclose(daily.returns, [0.10, 0.10, -0.5], rtol=1e-12)


def test_calendar_is_24_7_only_when_the_data_trades_on_saturdays() -> None:
    friday = MONDAY_2024_01_01 + 4 * DAY
    sunday_evening = MONDAY_2024_01_01 + 6 * DAY + 22 * 3600 * 10**9  # FX and CME open then
    saturday = MONDAY_2024_01_01 + 5 * DAY + 12 * 3600 * 10**9
    assert stats.calendar_of(np.array([friday, sunday_evening])) == ("sessions", 252)
    assert stats.calendar_of(np.array([friday, saturday])) == ("24/7", 365)
    assert stats.calendar_of(np.zeros(0, dtype=np.int64)) == ("sessions", 252)


def test_a_short_sample_has_no_annualised_sharpe() -> None:
    n = stats.MIN_DAILY_RETURNS - 1
    days = MONDAY_2024_01_01 + np.arange(n, dtype=np.int64) * DAY
    ts, eq = curve_from_daily(returns(n, seed=1), 100_000.0, days)
    perf = stats.performance(ts, eq, 100_000.0)
    assert perf["daily_returns"] == n
    for key in ("sharpe", "sortino", "calmar", "annual_return", "annual_volatility"):
        assert perf[key] is None, key
    assert perf["sharpe_note"].startswith("insufficient data for an annualised Sharpe")
    assert perf["total_return"] == pytest.approx(eq[-1] / 100_000.0 - 1.0, rel=1e-12)
    # one more day and the figure appears
    n += 1
    days = MONDAY_2024_01_01 + np.arange(n, dtype=np.int64) * DAY
    ts, eq = curve_from_daily(returns(n, seed=1), 100_000.0, days)
    perf = stats.performance(ts, eq, 100_000.0)
    assert perf["sharpe"] is not None and math.isfinite(perf["sharpe"])


def test_flat_equity_gives_no_ratio_rather_than_a_division_by_zero() -> None:
    days = MONDAY_2024_01_01 + np.arange(30, dtype=np.int64) * DAY
    perf = stats.performance(days, np.full(30, 100.0), 100.0)
    assert perf["sharpe"] is None and perf["sortino"] is None and perf["calmar"] is None
    assert perf["annual_return"] == 0.0 and perf["max_drawdown_daily"] == 0.0


def test_monthly_returns_compound_the_days() -> None:
    jan31 = MONDAY_2024_01_01 + 30 * DAY
    daily = stats.DailyReturns(np.array([jan31 - DAY, jan31, jan31 + DAY], dtype=np.int64),
                               np.zeros(3), np.array([0.10, 0.10, -0.20]))
    months, r = stats.monthly_returns(daily)
    assert months == ["2024-01", "2024-02"]
    np.testing.assert_allclose(r, [0.21, -0.20], rtol=1e-12)
