"""The replay runner: event time, big batches, kernels run to the next event.

`run_replay` builds the trading core (`engine.py`) on a `ReplayClock`, compiles every kernel,
warms the matrices from the data before the trading start (`replay.history_s`), then feeds the
data client's batches to the `ReplayLoop` (`replay.py`), which publishes each bar at
its gap so an order placed on a bar fills against the next tick. At the end of the data (or on a
graceful stop) the strategies stop (they flatten), their closing orders fill at the last tick,
working orders are cancelled, and the report is written.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog

from himari.daemon.clock import ReplayClock
from himari.daemon.config import HimariConfig
from himari.daemon.engine import TradingCore, build_core
from himari.daemon.feeds.client import ReplayDataClient
from himari.daemon.ids import IdSource
from himari.daemon.orders.journal import Journal
from himari.daemon.progress import Progress
from himari.daemon.replay import ReplayLoop
from himari.daemon.sources import ReplaySource, open_source

log = structlog.get_logger("himari.replay")


class ReplaySession:
    """A replay: the source, the core and the loop (what the report reads)."""

    def __init__(self, cfg: HimariConfig, source: ReplaySource, core: TradingCore,
                 loop: ReplayLoop) -> None:
        self.cfg = cfg
        self.source = source
        self.core = core
        self.loop = loop

    # The report's view (one instrument in most sessions: the first stands for it).
    @property
    def instrument(self) -> Any:
        return self.source.instrument

    @property
    def strategy(self) -> Any:
        return self.core.strategies[0]

    @property
    def risk(self) -> Any:
        """The instrument's risk engine (the portfolio risk when there are several)."""
        risks = self.core.risks
        return next(iter(risks.values())) if len(risks) == 1 else self.core.risk

    @property
    def matrices(self) -> Any:
        return self.core.matrices[0] if self.core.matrices else None

    def __getattr__(self, name: str) -> Any:  # bus, om, timer, fills, journal, recorder, ...
        return getattr(self.core, name)

    # ---- the end of a session, the same for both runners

    def mark_last_ticks(self) -> None:
        """Mark every position at its instrument's last tick and take a last equity sample."""
        for inst_id, batch in self.loop.last_batches.items():
            self.core.cache.positions.mark(inst_id, int(batch.price[-1]))
        if self.loop.last_batches:
            self.core.portfolio.mark_equity(self.core.clock.now_ns(), notify_risk=False)

    async def close(self, recorder_task: asyncio.Task[None] | None) -> None:
        """Stop the slow path (records still queued are written) and close the journal."""
        core = self.core
        if core.recorder is not None and recorder_task is not None:
            await core.recorder.close(recorder_task)
        if core.journal is not None:
            core.journal.close()

    def write_report(self, out_dir: Path, *, t_start: float, t_ready: float, t_loop: float,
                     t_end_loop: float, **extra: Any) -> dict[str, Any]:
        from himari.daemon.report.build import (build_report, write_artifacts, write_json_report,
                                                write_tearsheet)

        files = write_artifacts(self, out_dir)
        t_written = time.perf_counter()
        report = build_report(self, files, startup_seconds=t_ready - t_start,
                              loop_seconds=t_end_loop - t_loop, replay_seconds=t_written - t_loop)
        report.update(extra)
        write_tearsheet(self, out_dir, report)  # after the throughput figure: plotly is slow
        write_json_report(out_dir, report)
        return report


def build_session(cfg: HimariConfig, data_paths: list[str], out_dir: Path, *,
                  ids: IdSource | None = None, journal_path: Path | None = None) -> ReplaySession:
    source = open_source(cfg, data_paths)
    clock = ReplayClock()
    ids = ids or IdSource("R")
    journal = None
    if journal_path is not None or cfg.report.journal:  # a state dir's journal is always on
        if journal_path is None:
            out_dir.mkdir(parents=True, exist_ok=True)
            journal_path = out_dir / "journal.jsonl"
            journal_path.unlink(missing_ok=True)  # a replay's journal starts empty
        journal = Journal(journal_path, fsync=cfg.report.journal_fsync)
    core = build_core(cfg, source.instruments, clock, ids, out_dir=out_dir, journal=journal)
    loop = ReplayLoop(core.bus, clock, core.builders, core.matching, core.timer,
                      on_tick=core.on_tick)
    core.start()
    return ReplaySession(cfg, source, core, loop)


def warmup(session: ReplaySession) -> None:
    session.core.warmup()
    session.source.warmup()


async def run_replay(cfg: HimariConfig, data_paths: list[str], out_dir: Path,
                     on_ready: Any = None, *, ids: IdSource | None = None,
                     journal_path: Path | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    session = build_session(cfg, data_paths, out_dir, ids=ids, journal_path=journal_path)
    core = session.core
    warmup(session)
    data = ReplayDataClient(session.source, cfg.replay.speed, history_s=cfg.replay.history_s)
    await data.connect()
    warmed = core.warm_matrices(data.history())  # the data before the trading start
    t_ready = time.perf_counter()
    log.info("ready", instruments=list(core.instruments), inputs=session.source.describe(),
             bar_specs=[b.spec.text for b in session.loop.builders],
             history_ticks=data.history_ticks, matrix_bars_prewarmed=warmed,
             warmup_s=round(t_ready - t_start, 3))
    if on_ready is not None:
        on_ready()

    recorder_task = (asyncio.create_task(core.recorder.run(), name="decision-recorder")
                     if core.recorder else None)
    progress = Progress(cfg.replay.progress, session.source.expected_ticks())
    t_loop = time.perf_counter()
    stopped_early = False
    try:
        try:
            async for batch in data.stream():
                session.loop.process(batch)  # synchronous: a stop lands between batches
                progress.update(session.loop.ticks)
                await asyncio.sleep(0)  # let the slow path run between batches
        except asyncio.CancelledError:
            # A graceful stop (SIGTERM/SIGINT/SIGHUP): end the session as at the end of the data,
            # so the strategy flattens, working orders are cancelled and the report is written.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            stopped_early = True
            log.warning("replay_stopped_early", ticks=session.loop.ticks)
        progress.close(session.loop.ticks)
        session.loop.finish()
        core.stop_strategies()
        session.loop.flush_venue()
        core.om.cancel_all()
        flush = getattr(core.client, "flush", None)
        if flush is not None:
            flush()  # cancels (and fills) still in flight with a latency are delivered
        t_end_loop = time.perf_counter()
        session.mark_last_ticks()
    finally:
        await session.close(recorder_task)
    extra: dict[str, Any] = {"stopped_early": stopped_early}
    if cfg.replay.history_s > 0:
        extra["history"] = {"seconds": cfg.replay.history_s, "ticks": data.history_ticks,
                            "matrix_bars_prewarmed": warmed}
    return session.write_report(out_dir, t_start=t_start, t_ready=t_ready, t_loop=t_loop,
                                t_end_loop=t_end_loop, **extra)
