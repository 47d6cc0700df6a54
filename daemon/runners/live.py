"""The live runner: the wall clock, a data client, timers; the same trading core as a replay.

`run_live` builds the core (`engine.py`) on a `LiveClock`, warms every kernel, adopts and
reconciles the state directory's journal (a restart), warms the feature matrices from the data
client's history window, starts the strategies, then runs three owned tasks
until the configured duration passes, the data ends, or SIGTERM/SIGINT/SIGHUP cancels the session:

- the **feed** task hands each batch to the same `ReplayLoop` a replay uses (bars to the next
  event, the matching engine of a simulated exchange in between), so a strategy, risk and the
  order manager see exactly what they would see in a replay of the same ticks;
- the **overdue** task looks up, by client order id, any order the venue has not acknowledged
  within the order manager's timeout, and applies the answer (never a blind resend);
- the **timer** task sleeps until the next due time and then (1) fires the clock's timers (the
  simulated exchange's latency deliveries), (2) closes every time bar whose end has passed by
  `bar_close_delay_ms` even when no tick arrived after it, and (3) at each 30-minute boundary
  flushes the strategic matrix, so a quiet market never holds a bar or a row back.

The stop is graceful: the strategies flatten, their closing market orders fill at the last tick
seen (simulated exchange), working orders are cancelled, and the same report as a replay's is
written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import structlog

from himari.daemon import plugins
from himari.daemon.clock import LiveClock
from himari.daemon.config import HimariConfig
from himari.daemon.engine import TradingCore, build_core
from himari.daemon.feeds.client import PacedDataClient
from himari.daemon.ids import IdSource
from himari.daemon.orders.journal import Journal
from himari.daemon.orders.recovery import RecoveredState, load_state
from himari.daemon.replay import ReplayLoop
from himari.daemon.runners.replay import ReplaySession
from himari.daemon.sources import BrokerSource, open_source

log = structlog.get_logger("himari.live")

STRATEGIC_FLUSH_NS = 30 * 60 * 1_000_000_000


class LiveRunner:
    def __init__(self, cfg: HimariConfig, core: TradingCore, data: Any, loop: ReplayLoop) -> None:
        self.cfg = cfg
        self.core = core
        self.data = data
        self.loop = loop
        self.clock: LiveClock = core.clock
        self.delay_ns = int(cfg.live.bar_close_delay_ms * 1_000_000)
        self._wake = asyncio.Event()
        self.clock.on_new_timer = lambda _ts: self._wake.set()
        self.bars_closed_by_timer = 0
        self.strategic_flushes = 0
        self._next_flush_ns = 0
        self.data_ended = False

    # ---- tasks

    async def feed(self) -> None:
        async for batch in self.data.stream():
            self.loop.process(batch)
            self.on_timers()  # a batch may have made something due (or set an earlier timer)
        self.data_ended = True

    def _next_due_ns(self) -> int | None:
        due = [t for t in (self.clock.next_timer_ns(),) if t is not None]
        for b in self.loop.builders:
            end = b.open_bar_close_ns
            if end is not None:
                due.append(end + self.delay_ns)
        if self.core.matrices:
            due.append(self._next_flush_ns)
        return min(due) if due else None

    def on_timers(self) -> None:
        now = self.clock.now_ns()
        self.clock.run_due()
        ready = now - self.delay_ns
        for b in self.loop.builders:
            bar = b.close_due(ready)
            if bar is not None:
                self.bars_closed_by_timer += 1
                self.core.bus.publish(bar)
        if self.core.matrices and now >= self._next_flush_ns:
            boundary = (now // STRATEGIC_FLUSH_NS) * STRATEGIC_FLUSH_NS
            for stage in self.core.matrices:
                stage.flush(boundary)
            self.strategic_flushes += 1
            self._next_flush_ns = boundary + STRATEGIC_FLUSH_NS + self.delay_ns

    async def watch_overdue(self, every_s: float = 1.0) -> None:
        """An order the venue never acknowledged (or a cancel it never answered) is looked up
        by client order id and the answer applied: never a blind resend. After the venue's link
        comes back, everything is reconciled over its status queries before anything else."""
        om, client = self.core.om, self.core.client
        # Reconnects and drops are counted, not sampled: a drop and reconnect between two polls
        # leaves `connected` true at both, yet outcomes were missed while the link was down.
        seen_up = om.counters["connection_connected"]
        seen_down = om.counters["connection_disconnected"]
        while True:
            await asyncio.sleep(every_s)
            downs = om.counters["connection_disconnected"]
            if downs != seen_down:
                seen_down = downs
                if self.cfg.live.cancel_on_disconnect:
                    asked = om.cancel_all(reason="cancel_on_disconnect")  # REST may still work
                    log.warning("cancel_on_disconnect", orders=asked)
            ups = om.counters["connection_connected"]
            if om.connected and ups != seen_up:
                seen_up = ups
                summary = await om.reconcile(client, self.clock.now_ns())
                log.warning("reconciled_after_reconnect", **summary)
            for order in om.overdue(self.clock.now_ns()):
                report = await client.query_order(order.client_order_id)
                om.apply_status_report(report, self.clock.now_ns(),
                                       client_order_id=order.client_order_id)

    async def wait_for_working_orders(self, max_wait_s: float = 10.0) -> None:
        """At a stop against a remote venue: the closing orders the strategies just sent fill
        on the venue's next ticks, reported over its stream; wait for them (bounded) before
        cancelling what is still working."""
        if self.core.matching is not None:
            return  # the simulated exchange filled them at the last tick already
        deadline = time.monotonic() + max_wait_s
        while self.core.cache.open_orders() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def reconcile_at_stop(self, max_wait_s: float = 10.0, rounds: int = 3) -> None:
        """At a stop against a remote venue, once the cancels are out: the venue is the truth.
        A fill its stream never delivered (sent while the link was down, or still held back)
        is booked from its fill activity, and the orders still open settle by lookup, so the
        report and the journal end where the broker does. A position the reconciliation moved
        makes a flattening strategy send one more order: that one is seen out too."""
        if self.core.matching is not None:
            return  # the simulated exchange is in process: nothing can have been missed
        drain = getattr(self.core.client, "drain", None)
        for _ in range(rounds):
            if drain is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(drain(), max_wait_s)
            try:
                summary = await self.core.om.reconcile(self.core.client, self.clock.now_ns())
            except Exception as exc:  # the stop still writes its report; the log says what
                log.error("reconcile_at_stop_failed", error=f"{type(exc).__name__}: {exc}")
                return
            log.warning("reconciled_at_stop", **summary)
            if not self.core.cache.open_orders():
                return
            await self.wait_for_working_orders(max_wait_s)
            self.core.om.cancel_all()
        log.error("orders_open_at_stop", orders=len(self.core.cache.open_orders()))

    async def drain_timers(self, max_wait_s: float = 2.0) -> None:
        """At a stop: let deliveries already scheduled (a simulated exchange's acknowledgement
        and fill latency) arrive, waiting at most `max_wait_s`."""
        deadline = self.clock.now_ns() + int(max_wait_s * 1e9 * self.clock.speed)
        while True:
            self.clock.run_due()
            due = self.clock.next_timer_ns()
            if due is None or due > deadline:
                return
            await asyncio.sleep(max(0.0, self.clock.wall_seconds_until(due)))

    async def timers(self) -> None:
        now = self.clock.now_ns()
        self._next_flush_ns = (now // STRATEGIC_FLUSH_NS + 1) * STRATEGIC_FLUSH_NS + self.delay_ns
        while True:
            self._wake.clear()
            due = self._next_due_ns()
            timeout = None if due is None else max(0.0, self.clock.wall_seconds_until(due))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self.on_timers()


async def recover(core: TradingCore, state_dir: Path) -> None:
    """Adopt the journal's state (rebuilt with this session's instruments, in-flight orders
    already settled by `runtime.prepare_state`) and reconcile it with the execution client before
    the first order: fills the venue has that we lack are booked once, positions follow the
    venue. The in-process simulated exchange has no memory of its own, so it is first given
    back the positions the journal proves."""
    state = load_state(state_dir, core.instruments)
    adopt = getattr(core.client, "adopt_positions", None)
    if adopt is not None:
        adopt({i: state.positions.quantity(i) for i in state.instruments})
    core.restore(state)
    summary = await core.om.reconcile(core.client, core.clock.now_ns())
    log.info("recovered", orders=len(state.orders), fills=state.fills,
             positions={i: state.positions.quantity(i) for i in state.instruments},
             reconcile=summary)


async def start_venue(core: TradingCore, recovering: bool, state_dir: Path | None) -> None:
    """Open a remote client's links, then make our books the venue's before the first order:
    adopt the journal (a restart) or reconcile from nothing (the broker is the truth)."""
    connect = getattr(core.client, "connect", None)
    if connect is not None:
        await connect()
    if recovering and state_dir is not None:
        await recover(core, state_dir)
    elif core.matching is None:
        summary = await core.om.reconcile(core.client, core.clock.now_ns())
        log.info("reconciled_at_start", **summary)


async def close_venue(core: TradingCore) -> None:
    """Let queued requests (the last cancels) reach the venue, then close its links."""
    drain = getattr(core.client, "drain", None)
    if drain is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(drain(), 5.0)
    close = getattr(core.client, "close", None)
    if close is not None:
        await close()


async def run_live(cfg: HimariConfig, out_dir: Path, on_ready: Any = None, *,
                   ids: IdSource | None = None, journal_path: Path | None = None,
                   data_paths: list[str] | None = None,
                   recovered: RecoveredState | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    broker_feed = cfg.feed.kind == "broker"
    source: Any = BrokerSource(cfg) if broker_feed else open_source(cfg, list(data_paths or []))
    clock = LiveClock(speed=1.0 if broker_feed else cfg.live.speed)
    ids = ids or IdSource(f"P{time.time_ns() // 1_000_000:x}")
    journal = None
    if journal_path is not None or cfg.report.journal:  # a state dir's journal is always on
        if journal_path is None:
            out_dir.mkdir(parents=True, exist_ok=True)
            journal_path = out_dir / "journal.jsonl"
        journal = Journal(journal_path, fsync=cfg.report.journal_fsync)
    core = build_core(cfg, source.instruments, clock, ids, out_dir=out_dir, journal=journal)
    data = (plugins.venue_module(cfg).build_data(plugins.venue_config(cfg), core.instruments,
                                                 clock=clock)
            if broker_feed else PacedDataClient(source, clock, history_s=cfg.live.history_s))
    loop = ReplayLoop(core.bus, clock, core.builders, core.matching, core.timer,
                      on_tick=core.on_tick)
    runner = LiveRunner(cfg, core, data, loop)
    session = ReplaySession(cfg, source, core, loop)
    core.warmup()
    source.warmup()
    try:
        await start_venue(core, recovered is not None and journal_path is not None,
                          journal_path.parent if journal_path is not None else None)
    except BaseException:
        await close_venue(core)  # a failed start-up leaves no link open
        if core.journal is not None:
            core.journal.close()
        raise
    await data.connect()
    for inst_id in core.instruments:
        data.subscribe(inst_id, ("trades", "quotes"))
    warmed = core.warm_matrices(data.history())
    core.start()
    t_ready = time.perf_counter()
    log.info("ready", mode=cfg.daemon.mode, instruments=list(core.instruments),
             history_ticks=getattr(data, "history_ticks", 0), matrix_bars_prewarmed=warmed,
             speed=cfg.live.speed, duration_s=cfg.live.duration_s)
    if on_ready is not None:
        on_ready()

    tasks: list[asyncio.Task[Any]] = []
    recorder_task = (asyncio.create_task(core.recorder.run(), name="decision-recorder")
                     if core.recorder else None)
    stopped_by = "data_end"
    t_loop = time.perf_counter()
    try:
        feed_task = asyncio.create_task(runner.feed(), name="live-feed")
        timer_task = asyncio.create_task(runner.timers(), name="live-timers")
        watch_task = asyncio.create_task(runner.watch_overdue(), name="live-overdue")
        tasks = [feed_task, timer_task, watch_task]
        duration = cfg.live.duration_s if cfg.live.duration_s > 0 else None
        try:
            # The feed ends with the data; the timer and overdue tasks run until cancelled, so
            # any of them finishing first has failed: the session stops on its error (exit 1).
            done, _ = await asyncio.wait(tasks, timeout=duration,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                stopped_by = "duration"
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            stopped_by = "signal"
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        log.warning("live_stopping", stopped_by=stopped_by, ticks=loop.ticks)
        loop.finish()
        core.stop_strategies()
        loop.flush_venue()
        await runner.drain_timers()
        await runner.wait_for_working_orders()
        core.om.cancel_all()
        await runner.drain_timers()
        await runner.reconcile_at_stop()
        t_end_loop = time.perf_counter()
        session.mark_last_ticks()
        await data.close()
    finally:
        for t in tasks:
            t.cancel()
        await close_venue(core)
        await session.close(recorder_task)
    live = {"bars_closed_by_timer": runner.bars_closed_by_timer,
            "strategic_flushes": runner.strategic_flushes,
            "history_ticks": getattr(data, "history_ticks", 0),
            "matrix_bars_prewarmed": warmed, "speed": cfg.live.speed}
    return session.write_report(out_dir, t_start=t_start, t_ready=t_ready, t_loop=t_loop,
                                t_end_loop=t_end_loop, mode=cfg.daemon.mode,
                                stopped_by=stopped_by, stopped_early=stopped_by == "signal",
                                live=live)
