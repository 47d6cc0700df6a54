"""What writing tearsheet.html costs (outside `ticks_per_second`: it is written after the
throughput figure), for equity curves of the default replay's size up to a long replay's.

Each case builds a curve of N bar-close samples (a random walk, a fill every 20 bars, a round
trip every 20 bars) and writes the page R times; prints p50/p99 seconds and the page size.
Usage: python bench/bench_tearsheet.py [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

from himari.daemon.report.tearsheet import TearsheetInput, write_tearsheet
from himari.daemon.report.trades import FillMark, TradeRow

CASES = (4_000, 6_880, 50_000, 200_000)  # equity samples: short replays, then long ones


def make(n: int) -> TearsheetInput:
    rng = np.random.default_rng(0)
    ts = 1_704_067_200_000_000_000 + np.arange(n, dtype=np.int64) * 125_000_000_000
    eq = 100_000 + np.cumsum(rng.normal(0, 1, n))
    price = (10_000 + np.cumsum(rng.integers(-3, 4, n))).astype(np.int64)
    marks = [FillMark(int(ts[i]), "SYN", 1 if i % 40 else -1, 1, int(price[i]), "reverse",
                      1, f"F{i}", f"D{i}") for i in range(0, n, 20)]
    trades = [TradeRow("SYN", 1, 1, int(ts[i]), int(ts[i + 10]), Decimal("100.01"),
                       Decimal("100.02"), Decimal("0.1"), 2, f"D{i}", f"D{i + 20}")
              for i in range(0, n - 11, 20)]
    return TearsheetInput(title="bench", instrument_id="SYN", currency="USD",
                          starting_cash=100_000.0, tick_size=Decimal("0.01"), lot_size=Decimal(1),
                          ts_ns=ts, equity=eq, price_ticks=price, marks=marks, trades=trades,
                          summary={"bench": n})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tearsheet.html"
        for n in CASES:
            d = make(n)
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                write_tearsheet(path, d)
                times.append(time.perf_counter() - t0)
            times.sort()
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
            print(f"samples {n:>8,}  p50 {p50:6.3f} s  p99 {p99:6.3f} s  "
                  f"page {path.stat().st_size / 1e6:5.2f} MB")


if __name__ == "__main__":
    main()
