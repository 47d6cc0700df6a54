"""Performance figures of a replay, computed from the equity curve and the round trips.

- `pnl`: net PnL = realized + unrealized - fees, in the instrument currency (exact Decimal).
- `sharpe`: mean / std (ddof 1) of the equity changes between consecutive equity samples (one per
  strategy bar), annualized by sqrt(samples per year) where a year is 365.25 days and the sample
  period is the mean spacing of the samples (markets that close make this approximate). Returns are
  equity changes over starting equity, so flat periods count as zero returns. 0 with < 2 samples or
  zero variance.
- `max_drawdown`: the largest fall of equity from its running peak, in money and as a fraction of
  that peak.
- `win_rate`: winning round trips (net of fees) / round trips.
- `exposure`: the fraction of equity samples taken while a position was open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

_YEAR_NS = 365.25 * 86_400 * 1e9


@dataclass
class EquityCurve:
    """Equity sampled at each close of the strategy's primary bar spec (marked to the close)."""

    ts_ns: list[int] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    position: list[int] = field(default_factory=list)

    def append(self, ts_ns: int, equity: float, position: int) -> None:
        self.ts_ns.append(ts_ns)
        self.equity.append(equity)
        self.position.append(position)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.ts_ns, dtype=np.int64), np.asarray(self.equity, dtype=np.float64),
                np.asarray(self.position, dtype=np.int64))


def sharpe_ratio(ts_ns: np.ndarray, equity: np.ndarray, starting_equity: float) -> float:
    if equity.shape[0] < 3 or starting_equity <= 0:
        return 0.0
    rets = np.diff(equity) / starting_equity
    sd = float(np.std(rets, ddof=1))
    if not math.isfinite(sd) or sd == 0.0:
        return 0.0
    span = float(ts_ns[-1] - ts_ns[0])
    if span <= 0:
        return 0.0
    periods_per_year = _YEAR_NS / (span / (equity.shape[0] - 1))
    return float(np.mean(rets) / sd * math.sqrt(periods_per_year))


def max_drawdown(equity: np.ndarray) -> tuple[float, float]:
    """(money, fraction of the peak) of the largest peak-to-trough fall."""
    if equity.shape[0] == 0:
        return 0.0, 0.0
    peak = np.maximum.accumulate(equity)
    dd = peak - equity
    i = int(np.argmax(dd))
    money = float(dd[i])
    frac = money / float(peak[i]) if peak[i] > 0 else 0.0
    return money, frac


def win_rate(trade_pnls: list[Decimal]) -> float:
    if not trade_pnls:
        return 0.0
    return sum(1 for p in trade_pnls if p > 0) / len(trade_pnls)


def exposure(position_samples: np.ndarray) -> float:
    if position_samples.shape[0] == 0:
        return 0.0
    return float(np.count_nonzero(position_samples) / position_samples.shape[0])
