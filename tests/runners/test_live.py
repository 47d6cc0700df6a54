"""The live runner's parts: the sped-up wall clock, the paced data client, time bars that close at
their boundary without a tick, and a whole paper-sim session on the simulated exchange."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from himari.daemon.bars import BarBuilder, BarSpec
from himari.daemon.clock import LiveClock
from himari.daemon.config import load_config
from himari.daemon.events import TickBatch
from himari.daemon.feeds.client import PacedDataClient, ReplayDataClient
from himari.daemon.ids import IdSource
from himari.daemon.sources import open_source

S = 1_000_000_000


class FakeWall:
    """A wall clock that only moves when the code under test sleeps."""

    def __init__(self, t0: int = 5_000 * S) -> None:
        self.t = t0
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a paced feed must never sleep for nothing"
        self.slept.append(seconds)
        self.t += int(seconds * 1e9) + 1


def test_live_clock_runs_at_its_speed_from_the_anchor():
    wall = FakeWall()
    clock = LiveClock(speed=60.0, wall_ns=wall)
    assert clock.now_ns() == wall.t  # plain wall time before an anchor
    clock.anchor(1_000 * S)
    assert clock.now_ns() == 1_000 * S
    wall.t += 2 * S  # two wall seconds are two minutes of data time
    assert clock.now_ns() == 1_000 * S + 120 * S
    assert abs(clock.wall_seconds_until(1_000 * S + 180 * S) - 1.0) < 1e-9


def test_live_clock_tells_the_timer_task_about_an_earlier_timer():
    clock = LiveClock()
    woken: list[int] = []
    clock.on_new_timer = woken.append
    clock.set_timer(clock.now_ns() + 10 * S, lambda t: None)
    clock.set_timer(clock.now_ns() + 20 * S, lambda t: None)  # later: no need to wake
    clock.set_timer(clock.now_ns() + 1 * S, lambda t: None)
    assert len(woken) == 2


def _source(n_ticks: int = 3000):
    cfg = load_config(None, [f"feed.synthetic.n_ticks={n_ticks}", "feed.batch_size=1000"])
    return cfg, open_source(cfg, [])


def test_paced_client_releases_every_tick_once_in_order_never_early():
    cfg, source = _source()
    all_ts = np.concatenate([b.ts_ns for b in open_source(cfg, []).batches()])
    wall = FakeWall()
    clock = LiveClock(speed=600.0, wall_ns=wall)
    client = PacedDataClient(source, clock, history_s=600.0, sleep=wall.sleep, max_batch=64)

    async def collect() -> tuple[list[TickBatch], list[TickBatch], list[int]]:
        hist = list(client.history())
        live, late = [], []
        async for batch in client.stream():
            live.append(batch)
            late.append(int(clock.now_ns() - batch.ts_ns[-1]))  # >= 0: released once due
        return hist, live, late

    hist, live, late = asyncio.run(collect())
    hist_ts = np.concatenate([b.ts_ns for b in hist])
    live_ts = np.concatenate([b.ts_ns for b in live])
    assert hist_ts[-1] < all_ts[0] + 600 * S <= live_ts[0]  # the history window, then live
    assert client.history_ticks == len(hist_ts)
    assert np.array_equal(np.concatenate([hist_ts, live_ts]), all_ts)  # nothing lost or doubled
    assert all(x >= 0 for x in late)
    assert max(len(b) for b in live) <= 64
    assert wall.slept, "a paced feed waits for its ticks"


def test_replay_client_yields_the_source_unchanged():
    cfg, source = _source(2500)
    client = ReplayDataClient(source)
    client.subscribe(source.instrument.id, ("trades",))

    async def collect() -> int:
        await client.connect()
        assert client.connected
        return sum([len(b) async for b in client.stream()])

    assert asyncio.run(collect()) == 2500


def test_a_time_bar_closes_at_its_boundary_without_a_tick():
    b = BarBuilder(BarSpec.parse("1m"), "X", IdSource())
    ts = np.array([60 * S, 70 * S, 90 * S], dtype=np.int64)  # the first bar opens on its boundary
    batch = TickBatch.from_trades("X", ts, np.array([100, 103, 99]), np.array([1, 2, 3]))
    b.start_batch(batch)
    assert b.pending_gap < 0  # the bar [60s, 120s) is still open: no tick after it yet
    assert b.open_bar_close_ns == 120 * S
    assert b.close_due(119 * S) is None
    bar = b.close_due(120 * S)
    assert bar is not None and (bar.ts_open, bar.ts_close) == (60 * S, 120 * S)
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.n_ticks) == (100, 103, 99, 99, 6, 3)
    assert b.close_due(10_000 * S) is None  # closed once
    # the next tick opens the next bar as usual
    b.start_batch(TickBatch.from_trades("X", np.array([185 * S]), np.array([101]), np.array([1])))
    assert b.open_bar_close_ns == 240 * S


def test_paper_sim_session_trades_on_the_wall_clock_and_stops_flat(tmp_path: Path):
    from himari.daemon.app import run_session

    cfg = load_config("config/paper-sim.toml" if Path("config/paper-sim.toml").exists()
                      else Path(__file__).parents[2] / "config" / "paper-sim.toml",
                      ["live.duration_s=3", "live.speed=6000", 'strategy.params.bar_spec="1m"',
                       "strategy.params.fast=3", "strategy.params.slow=6", "matrices.enabled=true",
                       "live.history_s=100000", 'log.level="warning"'])
    rep = asyncio.run(run_session(cfg, [], tmp_path / "o"))
    assert rep["mode"] == "paper" and rep["stopped_by"] == "duration"
    assert rep["fills"] > 0 and rep["orders"] >= rep["fills"] // 2
    assert rep["final_position_lots"] == 0  # flattened on stop
    assert rep["live"]["matrix_bars_prewarmed"] > 200  # the history window warmed the matrices
    assert rep["live"]["strategic_flushes"] > 0  # the 30-minute flush ran on the timer
    assert (tmp_path / "o" / "fills.csv").read_text().count("\n") == rep["fills"] + 1


def test_live_runner_timer_publishes_a_quiet_bar_and_flushes_the_strategic_row(tmp_path: Path):
    """No tick after the boundary: the timer closes the bar (the strategy sees it on time)."""
    from himari.daemon.engine import build_core
    from himari.daemon.events import Bar
    from himari.daemon.replay import ReplayLoop
    from himari.daemon.runners.live import STRATEGIC_FLUSH_NS, LiveRunner

    # The EMA cross on 1-minute bars, pinned: the timer must close the strategy's own quiet bar.
    cfg = load_config(None, ['strategy.name="ema_cross"', 'strategy.params.bar_spec="1m"',
                             "matrices.enabled=true",
                             "report.decision_log=false", "report.journal=false"])
    wall = FakeWall(t0=0)
    clock = LiveClock(wall_ns=wall)
    _, source = _source(100)
    core = build_core(cfg, source.instruments, clock, IdSource(), out_dir=None)
    loop = ReplayLoop(core.bus, clock, core.builders, core.matching, core.timer, core.on_tick)
    runner = LiveRunner(cfg, core, data=None, loop=loop)
    seen: list[Bar] = []
    core.bus.subscribe(Bar, seen.append, name="test", order=99)
    inst = source.instrument.id
    t_open = 30 * STRATEGIC_FLUSH_NS  # on a 30-minute boundary
    wall.t = t_open
    clock.anchor(t_open)
    runner._next_flush_ns = t_open + STRATEGIC_FLUSH_NS + runner.delay_ns
    loop.process(TickBatch.from_trades(inst, np.array([t_open, t_open + 5 * S]),
                                       np.array([10_000, 10_001]), np.array([1, 1])))
    assert seen == []
    wall.t = t_open + 60 * S  # the 1-minute boundary, but not yet its close delay
    runner.on_timers()
    assert seen == []
    wall.t += runner.delay_ns
    runner.on_timers()
    assert [(b.spec, b.ts_close) for b in seen] == [("1m", t_open + 60 * S)]
    assert runner.bars_closed_by_timer == 1
    wall.t = t_open + STRATEGIC_FLUSH_NS + runner.delay_ns
    runner.on_timers()  # the 5-minute bar closes too, and the 30-minute flush runs
    assert ("5m", t_open + 300 * S) in [(b.spec, b.ts_close) for b in seen]
    assert runner.strategic_flushes == 1
