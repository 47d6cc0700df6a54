"""The replay loop: orders placed on a bar fill against the next tick, and batch boundaries change
nothing (the kernels resume exactly where they stopped)."""

from __future__ import annotations

import asyncio
import csv
from decimal import Decimal
from pathlib import Path

import pytest

from himari.daemon.app import run_replay
from himari.daemon.config import load_config
from himari.daemon.feeds.synthetic import SyntheticFeed


def replay(tmp_path: Path, name: str, *overrides: str) -> tuple[dict, list[dict[str, str]]]:
    # The EMA cross, pinned: it trades within 30,000 ticks (the default ensemble needs a week).
    cfg = load_config(None, ["feed.synthetic.n_ticks=30000", 'strategy.name="ema_cross"',
                             "strategy.params.fast=3",
                             "strategy.params.slow=8", "replay.progress=false",
                             "log.level=\"warning\"", *overrides])
    out = tmp_path / name
    report = asyncio.run(run_replay(cfg, [], out))
    with (out / "fills.csv").open() as fh:
        return report, list(csv.DictReader(fh))


@pytest.mark.parametrize("spec", ["100t", "1m", "500v"])
def test_batch_size_does_not_change_fills(tmp_path, spec):
    runs = [replay(tmp_path, f"b{size}", f"feed.batch_size={size}",
                   f"strategy.params.bar_spec=\"{spec}\"") for size in (997, 4096, 65536)]
    fills = [r[1] for r in runs]
    assert len(fills[0]) > 20
    assert fills[0] == fills[1] == fills[2]
    assert runs[0][0]["bars"] == runs[1][0]["bars"] == runs[2][0]["bars"]


def test_market_orders_fill_at_the_tick_after_the_bar_close(tmp_path):
    report, fills = replay(tmp_path, "n", "strategy.params.bar_spec=\"100t\"",
                           "venue.params.slippage_ticks=0", "matrices.enabled=false")
    cfg = load_config(None, ["feed.synthetic.n_ticks=30000"])
    ticks = SyntheticFeed(cfg.feed).arrays()
    n = len(ticks.ts_ns)
    tick = Decimal(report["instrument"]["tick_size"])
    at = {(int(ticks.ts_ns[i]), int(ticks.price[i])) for i in range(n)}

    def tick_set(offset: int) -> set[tuple[int, int]]:
        return {(int(ticks.ts_ns[i]), int(ticks.price[i])) for i in range(100 + offset, n, 100)}

    # A 100-tick bar closes after tick 100k-1: the order it triggers meets tick 100k. A flip
    # closes there and opens the new side on the next tick, 100k+1, once the close has filled.
    got = [(int(f["ts_ns"]), int(Decimal(f["price"]) / tick)) for f in fills[:-1]]
    assert got and all(g in at for g in got)
    first, second = tick_set(0), tick_set(1)
    assert all(g in first or g in second for g in got)
    assert sum(g in first for g in got) >= len(got) // 2
    # never on the tick that closed the bar
    assert not any(g in tick_set(-1) - first - second for g in got)
