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
    cfg = load_config(None, ["feed.synthetic.n_ticks=30000", "strategy.params.fast=3",
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
    # A 100-tick bar closes after tick 100k-1, so its order meets tick 100k; the closing order
    # at the end of the data fills at the last tick.
    after_close = {(int(ticks.ts_ns[i]), int(ticks.price[i])) for i in range(100, len(ticks.ts_ns), 100)}
    last = (int(ticks.ts_ns[-1]), int(ticks.price[-1]))
    tick = Decimal(report["instrument"]["tick_size"])
    got = [(int(f["ts_ns"]), int(Decimal(f["price"]) / tick)) for f in fills]
    assert got[:-1] and all(g in after_close for g in got[:-1])
    assert got[-1] in after_close | {last}
    # and never on the tick that closed the bar
    closing = {(int(ticks.ts_ns[i]), int(ticks.price[i])) for i in range(99, len(ticks.ts_ns), 100)}
    assert not any(g in closing - after_close for g in got[:-1])
