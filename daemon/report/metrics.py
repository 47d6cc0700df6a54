"""Performance figures of a replay, computed from the equity curve and the round trips.

- `pnl`: net PnL = realized + unrealized - fees, in the instrument currency (exact Decimal).
- `sharpe` and the other annualised figures: from DAILY returns, in `stats.py` (None, with a note,
  on fewer than 20 daily returns).
- `max_drawdown`: the largest fall of equity from its running peak, in money and as a fraction of
  that peak.
- `win_rate`: winning round trips (net of fees) / round trips.
- `exposure`: the fraction of equity samples taken while a position was open.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

@dataclass
class EquityCurve:
    """Equity sampled at each close of the strategy's primary bar spec (marked to the close),
    with the first instrument's mark in ticks (-1 before it has one: the tearsheet's price and
    buy-and-hold lines)."""

    # typed arrays, not lists: 8 bytes a sample (a list holds ~40), for million-bar replays
    ts_ns: array = field(default_factory=lambda: array("q"))
    equity: array = field(default_factory=lambda: array("d"))
    position: array = field(default_factory=lambda: array("q"))
    price: array = field(default_factory=lambda: array("q"))

    def append(self, ts_ns: int, equity: float, position: int, price: int = -1) -> None:
        self.ts_ns.append(ts_ns)
        self.equity.append(equity)
        self.position.append(position)
        self.price.append(price)

    def prices(self) -> np.ndarray:
        return np.array(self.price, dtype=np.int64)  # copies: the arrays may grow on

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (np.array(self.ts_ns, dtype=np.int64), np.array(self.equity, dtype=np.float64),
                np.array(self.position, dtype=np.int64))


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
