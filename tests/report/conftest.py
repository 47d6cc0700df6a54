from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from himari.daemon.report.tearsheet import TearsheetInput, write_tearsheet
from himari.daemon.report.trades import TradeRow, classify_fills

HOUR = 3600 * 10**9
START = 1_704_067_200_000_000_000  # 2024-01-01 00:00 UTC, a Monday


class Fill:
    def __init__(self, ts_ns: int, side: int, quantity: int, price: int, decision_id: str,
                 instrument_id: str = "BTCUSD") -> None:
        self.ts_ns, self.side, self.quantity, self.price = ts_ns, side, quantity, price
        self.decision_id, self.instrument_id = decision_id, instrument_id
        self.fill_id = "F" + decision_id


def make_input(days: int = 40) -> TearsheetInput:
    """Hourly samples over `days` calendar days (a 24/7 market), a random walk of price and
    equity, a long and a short round trip with known decision ids."""
    rng = np.random.default_rng(42)
    n = days * 24
    ts = START + HOUR // 2 + np.arange(n, dtype=np.int64) * HOUR  # 00:30 .. 23:30
    price = (400_000 + np.cumsum(rng.integers(-200, 201, n))).astype(np.int64)  # ticks of 0.25
    equity = 100_000.0 + np.cumsum(rng.normal(5.0, 150.0, n))
    fills = [Fill(int(ts[10]), +1, 2, int(price[10]), "D-R-1"),
             Fill(int(ts[50]), -1, 4, int(price[50]), "D-R-2"),  # reverse to short 2
             Fill(int(ts[90]), +1, 2, int(price[90]), "D-R-3")]  # exit
    marks = classify_fills(fills)
    trades = [TradeRow("BTCUSD", 1, 2, int(ts[10]), int(ts[50]), Decimal("100000.25"),
                       Decimal("100010.50"), Decimal("20.25"), 2, "D-R-1", "D-R-2"),
              TradeRow("BTCUSD", -1, 2, int(ts[50]), int(ts[90]), Decimal("100010.50"),
                       Decimal("100001.00"), Decimal("18.75"), 2, "D-R-2", "D-R-3")]
    return TearsheetInput(
        title="himari tearsheet: test", instrument_id="BTCUSD", currency="USD",
        starting_cash=100_000.0, tick_size=Decimal("0.25"), lot_size=Decimal("0.5"), ts_ns=ts,
        equity=equity, price_ticks=price, marks=marks, trades=trades,
        summary={"Sharpe (daily, annualised)": 1.2345, "ticks": 1_000_000},
        notes=["a note with <markup> & ampersand"])


@pytest.fixture
def make_tearsheet_input():
    return make_input


@pytest.fixture
def tearsheet_input() -> TearsheetInput:
    return make_input()


@pytest.fixture
def tearsheet_file(tmp_path: Path, tearsheet_input: TearsheetInput) -> Path:
    path = tmp_path / "tearsheet.html"
    write_tearsheet(path, tearsheet_input)
    return path
