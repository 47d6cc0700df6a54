"""Composition root and lifecycle of a replay session.

`build_session` wires one pipeline from config: feed -> bar builders -> (matrices) -> strategy ->
risk gate -> order manager -> venue, plus the slow path (decision records). `run_replay` drives it
under the event loop, then stops the strategy (which flattens), lets its closing orders fill at the
last tick, cancels what is still working and writes the report.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from himari.daemon import bars as bars_mod
from himari.daemon import plugins
from himari.daemon.bars import BarBuilder, BarSpec, BarSpecError
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.config import HimariConfig
from himari.daemon.configbase import ConfigError
from himari.daemon.events import Bar, Fill, PositionUpdate, TickBatch
from himari.daemon.feeds.pacing import paced
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.orders.journal import Journal
from himari.daemon.orders.manager import OrderManager
from himari.daemon.pipeline import RiskGate
from himari.daemon.recorder import DecisionRecorder
from himari.daemon.replay import ReplayLoop
from himari.daemon.report.metrics import EquityCurve
from himari.daemon.risk.engine import RiskEngine
from himari.daemon.sources import ReplaySource, open_source
from himari.daemon.stagetimer import StageTimer

log = structlog.get_logger("himari.app")

MATRIX_BAR_SPEC = "5m"


@dataclass
class Session:
    cfg: HimariConfig
    source: ReplaySource
    instrument: Instrument
    bus: Bus
    clock: ReplayClock
    ids: IdSource
    timer: StageTimer
    venue: Any
    om: OrderManager
    risk: RiskEngine
    strategy: Any
    loop: ReplayLoop
    matrices: Any
    recorder: DecisionRecorder | None
    journal: Journal | None
    fills: list[Fill]
    curve: EquityCurve
    primary_spec: str


def build_session(cfg: HimariConfig, data_paths: list[str], out_dir: Path,
                  journal_path: Path | None = None, ids: IdSource | None = None) -> Session:
    source = open_source(cfg, data_paths)
    instrument = source.instrument
    instruments = {instrument.id: instrument}
    timer = StageTimer()
    bus = Bus(timer=timer)
    clock = ReplayClock()
    ids = ids if ids is not None else IdSource("R")

    venue_mod = plugins.venue_module(cfg)
    venue = venue_mod.build(plugins.venue_config(cfg), instruments)
    journal = None
    if journal_path is not None:  # a state dir's journal: appended to, never emptied
        journal = Journal(journal_path, fsync=cfg.report.journal_fsync)
    elif cfg.report.journal:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "journal.jsonl").unlink(missing_ok=True)  # a replay's journal starts empty
        journal = Journal(out_dir / "journal.jsonl", fsync=cfg.report.journal_fsync)
    om = OrderManager(bus, clock, ids, instruments, venue, journal=journal)
    risk = RiskEngine(cfg.risk, instrument, ids)
    RiskGate(bus, risk, om, timer).attach()

    strategy_mod = plugins.strategy_module(cfg)
    strategy = strategy_mod.build(plugins.strategy_config(cfg), instrument=instrument, bus=bus,
                                  clock=clock, ids=ids)
    strategy.attach()

    specs = list(dict.fromkeys(list(strategy.bar_specs)
                               + ([MATRIX_BAR_SPEC] if cfg.matrices.enabled else [])))
    try:
        builders = [BarBuilder(BarSpec.parse(s), instrument.id, ids) for s in specs]
    except BarSpecError as exc:
        raise ConfigError("strategy.params.bar_spec", specs, str(exc)) from None

    matrices = None
    if cfg.matrices.enabled:
        from himari.daemon.matrices.stage import MatrixStage

        matrices = MatrixStage(bus, ids, instrument, cfg.matrices.tactical, cfg.matrices.strategic,
                               plugins.synergy_detector(cfg, ids))

    fills: list[Fill] = []
    bus.subscribe(Fill, fills.append, name="report.fills", order=200)

    curve = EquityCurve()
    primary = specs[0]
    cash0 = cfg.account.starting_cash
    closed_trips = [0]

    book = om.positions
    inst_id = instrument.id

    def on_bar(bar: Bar) -> None:
        risk.on_trade_price(bar.close, bar.ts_ns)
        risk.on_bar(bar)
        if bar.spec != primary:
            return
        book.mark(inst_id, bar.close)
        equity = book.equity(cash0)
        risk.on_equity(equity, bar.ts_ns)
        curve.append(bar.ts_ns, float(equity), book.quantity(inst_id))

    def on_position(ev: PositionUpdate) -> None:
        trips = om.positions.round_trips
        while closed_trips[0] < len(trips):
            risk.on_trade_closed(trips[closed_trips[0]].net_pnl)
            closed_trips[0] += 1

    # Risk sees the close (price, ATR, equity) before the strategy decides on it.
    bus.subscribe(Bar, on_bar, name="accounting", order=10)
    bus.subscribe(PositionUpdate, on_position, name="accounting.trades", order=10)

    recorder = None
    if cfg.report.decision_log:
        out_dir.mkdir(parents=True, exist_ok=True)
        recorder = DecisionRecorder(bus, out_dir / "decisions.jsonl")

    loop = ReplayLoop(bus, clock, builders, venue, timer)
    return Session(cfg, source, instrument, bus, clock, ids, timer, venue, om, risk, strategy, loop,
                   matrices, recorder, journal, fills, curve, primary)


def warmup(session: Session) -> None:
    """Compile every kernel before the session reports ready (Numba caches them on disk)."""
    bars_mod.warmup()
    session.risk.warmup()
    for obj in (session.source, session.venue, session.matrices):
        fn = getattr(obj, "warmup", None)
        if fn is not None:
            fn()


class _Progress:
    """Progress lines on stderr, at most one a second (wall time is for the human only), for
    replays of unknown length or of at least `LONG_REPLAY_TICKS`."""

    LONG_REPLAY_TICKS = 2_000_000

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled = enabled and (total is None or total >= self.LONG_REPLAY_TICKS)
        self.total = total
        self._t0 = time.monotonic()
        self._last = self._t0

    def update(self, ticks: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 1.0:
            return
        self._last = now
        rate = ticks / max(now - self._t0, 1e-9)
        pct = f" ({100 * ticks / self.total:.0f}%)" if self.total else ""
        print(f"replay: {ticks:,} ticks{pct}, {rate:,.0f} ticks/s", file=sys.stderr, flush=True)


async def _batches(source: ReplaySource, speed: float) -> AsyncIterator[TickBatch]:
    it: Iterator[TickBatch] = source.batches()
    async for batch in paced(it, speed):
        yield batch


async def run_replay(cfg: HimariConfig, data_paths: list[str], out_dir: Path,
                     on_ready: Any = None, journal_path: Path | None = None,
                     ids: IdSource | None = None) -> dict[str, Any]:
    from himari.daemon.report.build import build_report, write_artifacts, write_json_report

    t_start = time.perf_counter()
    session = build_session(cfg, data_paths, out_dir, journal_path, ids)
    warmup(session)
    t_ready = time.perf_counter()
    log.info("ready", instrument=session.instrument.id, inputs=session.source.describe(),
             bar_specs=[b.spec.text for b in session.loop.builders], warmup_s=round(t_ready - t_start, 3))
    if on_ready is not None:
        on_ready()

    recorder_task = (asyncio.create_task(session.recorder.run(), name="decision-recorder")
                     if session.recorder else None)
    progress = _Progress(cfg.replay.progress, session.source.expected_ticks())
    t_loop = time.perf_counter()
    stopped_early = False
    try:
        try:
            async for batch in _batches(session.source, cfg.replay.speed):
                session.loop.process(batch)  # synchronous: a stop lands between batches
                progress.update(session.loop.ticks)
                await asyncio.sleep(0)  # let the slow path run between batches
        except asyncio.CancelledError:
            # A graceful stop (SIGTERM/SIGINT): end the session as at the end of the data, so
            # the strategy flattens, working orders are cancelled and the report is written.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            stopped_early = True
            log.warning("replay_stopped_early", ticks=session.loop.ticks)
        session.loop.finish()
        session.strategy.on_stop()
        session.loop.flush_venue()
        session.om.cancel_all()
        t_end_loop = time.perf_counter()
        if session.loop.last_batch is not None and len(session.loop.last_batch):
            last_px = int(session.loop.last_batch.price[-1])
            session.om.positions.mark(session.instrument.id, last_px)
            session.curve.append(session.clock.now_ns(),
                                 float(session.om.positions.equity(cfg.account.starting_cash)),
                                 session.om.position(session.instrument.id))
    finally:
        if session.recorder is not None and recorder_task is not None:
            await session.recorder.close(recorder_task)
        if session.journal is not None:
            session.journal.close()
    files = write_artifacts(session, out_dir)
    t_written = time.perf_counter()
    report = build_report(session, files, startup_seconds=t_ready - t_start,
                          loop_seconds=t_end_loop - t_loop, replay_seconds=t_written - t_loop)
    report["stopped_early"] = stopped_early
    write_json_report(out_dir, report)
    return report
