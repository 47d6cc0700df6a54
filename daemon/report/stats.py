"""Annualised performance statistics from DAILY returns (the tearsheet's and report.json's).

Conventions (the same as empyrical-reloaded's, which the tests check these against):
- Daily returns: the equity curve (one sample per strategy bar) is cut at UTC midnight; a day's
  return is its last equity over the previous day's last equity, minus 1 (the first day's is over
  the starting cash). Only days with data count: a market's closed days are not zero returns.
- Calendar: "24/7" (crypto) when any equity sample falls on a Saturday (UTC), annualised with 365
  periods a year; otherwise "sessions" (stocks, futures, FX: all closed on Saturdays), with 252.
- Sharpe = mean / std (ddof 1) * sqrt(periods); risk-free rate 0.
- Sortino = mean * periods / (sqrt(mean(min(r, 0)^2)) * sqrt(periods)).
- Annual return: compound, (prod(1 + r)) ^ (periods / n) - 1; volatility = std (ddof 1) *
  sqrt(periods).
- Max drawdown (daily): the worst fall of the compounded daily wealth (starting at 1) from its
  running peak, a negative fraction; Calmar = annual return / |max drawdown|, None without a loss.
- Fewer than MIN_DAILY_RETURNS daily returns: every annualised figure is None and `sharpe_note`
  says why (a 10-day replay annualised per bar printed Sharpes like 861).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DAY_NS = 86_400 * 1_000_000_000
MIN_DAILY_RETURNS = 20  # about a trading month: below it a Sharpe's standard error exceeds ~1.6
PERIODS_24_7 = 365
PERIODS_SESSIONS = 252
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


@dataclass(frozen=True)
class DailyReturns:
    day_ns: np.ndarray  # int64: UTC midnight of each day with data
    equity: np.ndarray  # float64: the day's last equity
    returns: np.ndarray  # float64: the day's return


def daily_returns(ts_ns: np.ndarray, equity: np.ndarray, starting_equity: float) -> DailyReturns:
    """Last equity of each UTC day with samples, and the day-over-day returns."""
    if ts_ns.shape[0] == 0 or starting_equity <= 0:
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0, dtype=np.float64)
        return DailyReturns(empty_i, empty_f, empty_f)
    day = ts_ns // DAY_NS
    last = np.flatnonzero(np.diff(day) != 0)  # the last sample of each day but the final day
    idx = np.append(last, ts_ns.shape[0] - 1)
    eq = equity[idx].astype(np.float64)
    prev = np.concatenate(([float(starting_equity)], eq[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.where(prev > 0, eq / prev - 1.0, np.nan)
    return DailyReturns(day[idx] * DAY_NS, eq, rets)


def calendar_of(ts_ns: np.ndarray) -> tuple[str, int]:
    """("24/7", 365) when the data trades on Saturdays (UTC), else ("sessions", 252)."""
    if ts_ns.shape[0] and bool(np.any((ts_ns // DAY_NS + _EPOCH_WEEKDAY) % 7 == 5)):
        return "24/7", PERIODS_24_7
    return "sessions", PERIODS_SESSIONS


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def sharpe(r: np.ndarray, periods: int) -> float | None:
    if r.shape[0] < 2:
        return None
    sd = float(np.std(r, ddof=1))
    if sd == 0.0 or not math.isfinite(sd):
        return None
    return _finite(float(np.mean(r)) / sd * math.sqrt(periods))


def sortino(r: np.ndarray, periods: int) -> float | None:
    if r.shape[0] < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(periods)
    if downside == 0.0:
        return None  # no losing day: unbounded
    return _finite(float(np.mean(r)) * periods / downside)


def annual_return(r: np.ndarray, periods: int) -> float | None:
    if r.shape[0] < 1:
        return None
    growth = float(np.prod(1.0 + r))
    if growth <= 0:
        return -1.0
    return _finite(growth ** (periods / r.shape[0]) - 1.0)


def annual_volatility(r: np.ndarray, periods: int) -> float | None:
    if r.shape[0] < 2:
        return None
    return _finite(float(np.std(r, ddof=1)) * math.sqrt(periods))


def max_drawdown_of_returns(r: np.ndarray) -> float:
    """Worst fall of the compounded wealth (from 1) below its running peak: <= 0."""
    if r.shape[0] == 0:
        return 0.0
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    peak = np.maximum.accumulate(wealth)
    return float(np.min(wealth / peak - 1.0))


def calmar(r: np.ndarray, periods: int) -> float | None:
    mdd = max_drawdown_of_returns(r)
    ann = annual_return(r, periods)
    if mdd >= 0 or ann is None:
        return None
    return _finite(ann / abs(mdd))


def rolling_sharpe(r: np.ndarray, window: int, periods: int) -> np.ndarray:
    """Sharpe over each trailing `window` returns (NaN before the window fills or on zero
    variance), annualised by sqrt(periods) (pass periods=1 for a plain, unannualised ratio)."""
    n = r.shape[0]
    out = np.full(n, np.nan)
    if window < 2 or n < window:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(r, window)
    mean = windows.mean(axis=1)
    sd = windows.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[window - 1:] = np.where(sd > 0, mean / sd * math.sqrt(periods), np.nan)
    return out


def monthly_returns(daily: DailyReturns) -> tuple[list[str], np.ndarray]:
    """("YYYY-MM", compounded return) for each month with data."""
    if daily.returns.shape[0] == 0:
        return [], np.zeros(0)
    months = daily.day_ns.astype("datetime64[ns]").astype("datetime64[M]")
    keys, start = np.unique(months, return_index=True)
    growth = np.multiply.reduceat(1.0 + daily.returns, start)
    return [str(k) for k in keys], growth - 1.0


def performance(ts_ns: np.ndarray, equity: np.ndarray, starting_equity: float) -> dict[str, Any]:
    """The report's `performance` block (every annualised figure None on a short sample)."""
    daily = daily_returns(ts_ns, equity, starting_equity)
    r = daily.returns[np.isfinite(daily.returns)]
    calendar, periods = calendar_of(ts_ns)
    final = float(equity[-1]) if equity.shape[0] else float(starting_equity)
    out: dict[str, Any] = {
        "calendar": calendar,
        "periods_per_year": periods,
        "daily_returns": int(r.shape[0]),
        "min_daily_returns": MIN_DAILY_RETURNS,
        "total_return": (final / starting_equity - 1.0) if starting_equity > 0 else None,
        "max_drawdown_daily": max_drawdown_of_returns(r),
        "best_day": float(r.max()) if r.shape[0] else None,
        "worst_day": float(r.min()) if r.shape[0] else None,
    }
    enough = r.shape[0] >= MIN_DAILY_RETURNS
    for name, fn in (("sharpe", sharpe), ("sortino", sortino), ("calmar", calmar),
                     ("annual_return", annual_return), ("annual_volatility", annual_volatility)):
        out[name] = fn(r, periods) if enough else None
    if enough:
        out["sharpe_note"] = (f"annualised from {r.shape[0]} daily returns with sqrt({periods}) "
                              f"({calendar} calendar)")
    else:
        out["sharpe_note"] = (f"insufficient data for an annualised Sharpe: {r.shape[0]} daily "
                              f"returns, at least {MIN_DAILY_RETURNS} needed")
    return out
