"""The replay loop: tick batches through bar builders and the matching engine, Python once per event.

For each batch the loop asks every bar builder for its next bar close (a *gap* between two ticks,
see `bars.py`) and the venue for the next tick at which a working order executes. It lets the venue
execute everything before the earliest bar close, then publishes that bar on the bus, synchronously:
the strategy, risk and the order manager react inside `publish`, so an order placed on a bar close is
in the venue before the next tick is examined. The result equals tick-by-tick processing, while the
per-tick work stays inside Numba kernels.

Batches belong to one instrument each (a multi-instrument replay is merged in time order by the
source); the loop runs that instrument's bar builders. Before it publishes a bar, it tells
`on_tick` the last tick actually seen before the bar's gap (price and time: the stale-data rule and
market-order reference price need the tick, not the bar's close time). The same loop serves the
live runner, whose batches are a few ticks each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from himari.daemon.bars import NO_EVENT, BarBuilder
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.events import TickBatch
from himari.daemon.stagetimer import StageTimer


class ReplayVenue(Protocol):
    def next_execution(self, batch: TickBatch, start: int, stop: int) -> int: ...

    def execute_at(self, batch: TickBatch, k: int) -> None: ...

    def end_of_data(self, batch: TickBatch) -> None: ...


TickHook = Callable[[str, int, int], None]  # (instrument id, price ticks, ts_ns)


class ReplayLoop:
    def __init__(self, bus: Bus, clock: ReplayClock,
                 builders: list[BarBuilder] | dict[str, list[BarBuilder]],
                 venue: ReplayVenue | None, timer: StageTimer,
                 on_tick: TickHook | None = None) -> None:
        self.bus = bus
        self.clock = clock
        if isinstance(builders, dict):
            self.builders_by_instrument = builders
        else:
            by: dict[str, list[BarBuilder]] = {}
            for b in builders:
                by.setdefault(b.instrument_id, []).append(b)
            self.builders_by_instrument = by
        self.venue = venue
        self.timer = timer
        self.on_tick = on_tick
        self.ticks = 0
        self.batches = 0
        self.last_batch: TickBatch | None = None
        self.last_batches: dict[str, TickBatch] = {}  # per instrument, for the end-of-data pass

    @property
    def builders(self) -> list[BarBuilder]:
        return [b for bs in self.builders_by_instrument.values() for b in bs]

    def process(self, batch: TickBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        perf = time.perf_counter_ns
        ts = batch.ts_ns
        inst_id = batch.instrument_id
        builders = self.builders_by_instrument.get(inst_id, ())
        on_tick = self.on_tick
        venue = self.venue
        clock = self.clock
        publish = self.bus.publish
        t0 = perf()
        for b in builders:
            b.start_batch(batch)  # every bar close of the batch, one kernel call per builder
        self.timer.record("bars", perf() - t0, n)
        p = 0  # next tick the venue has not looked at
        venue_ns = 0
        while True:
            gap = n
            pending = False
            for b in builders:
                g = b.pending_gap
                if g != NO_EVENT:
                    pending = True
                    if g < gap:
                        gap = g
            t1 = perf()
            while p < gap and venue is not None:  # no venue: a remote one matches on its own
                k = venue.next_execution(batch, p, gap)
                if k >= gap:
                    p = gap
                    break
                clock.advance_to(int(ts[k]))
                venue.execute_at(batch, k)
                p = k + 1
            venue_ns += perf() - t1
            if not pending:
                break
            if on_tick is not None and gap > 0:
                on_tick(inst_id, int(batch.price[gap - 1]), int(ts[gap - 1]))
            for b in builders:
                if b.pending_gap == gap:
                    bar = b.take_bar()
                    if bar is not None:
                        clock.advance_to(bar.ts_close)
                        publish(bar)
        clock.advance_to(int(ts[n - 1]))
        if on_tick is not None:
            on_tick(inst_id, int(batch.price[n - 1]), int(ts[n - 1]))
        self.ticks += n
        self.batches += 1
        self.last_batch = batch
        self.last_batches[inst_id] = batch
        self.timer.record("venue_match", venue_ns, n)

    def finish(self) -> None:
        """End of data: drop incomplete bars. The caller then stops strategies and calls
        `flush_venue` so their closing market orders fill at the last tick."""
        for b in self.builders:
            b.finish()

    def flush_venue(self) -> None:
        """Market orders still waiting fill at each instrument's last tick (simulated venue)."""
        if self.venue is None:
            return
        for batch in self.last_batches.values():
            self.venue.end_of_data(batch)
