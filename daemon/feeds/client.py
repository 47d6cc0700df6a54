"""Data clients: the one interface through which market data enters a session.

A data client connects, is told which instruments and kinds (trades, quotes, bars) to deliver,
and yields `TickBatch`es. Replay, paper and live differ only in which client the runner gets:

- `ReplayDataClient`: recorded files or the synthetic stream, in event time, as fast as possible
  or paced at a speed factor (timestamps unchanged).
- `PacedDataClient`: the same data as a live feed for paper trading on the wall clock: each tick
  is released once a (sped-up) `LiveClock` reaches its timestamp; the first `history_s` seconds of
  data are handed over at once as history (warm-up).
- the broker and sandbox socket clients (later) implement the same methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol

import numpy as np

from himari.daemon.clock import LiveClock
from himari.daemon.events import TickBatch
from himari.daemon.feeds.pacing import paced
from himari.daemon.instruments import Instrument
from himari.daemon.sources import ReplaySource

KINDS = ("trades", "quotes", "bars")


def checked_subscription(instruments: dict[str, Instrument], instrument_id: str,
                         kinds: tuple[str, ...]) -> tuple[str, ...]:
    """What every data client's `subscribe` checks: a known instrument and known kinds."""
    if instrument_id not in instruments:
        raise KeyError(f"data client has no instrument {instrument_id!r}; it has "
                       f"{', '.join(instruments)}")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"subscription kinds {bad} are not among {KINDS}")
    return tuple(kinds)


class DataClient(Protocol):
    instruments: dict[str, Instrument]

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None: ...

    def subscribe(self, instrument_id: str, kinds: tuple[str, ...] = ("trades",)) -> None: ...

    def history(self) -> Iterator[TickBatch]: ...

    def stream(self) -> AsyncIterator[TickBatch]: ...

    async def close(self) -> None: ...


class _SourceClient:
    """What both source-backed clients share: subscriptions, connection state, and the history
    window (the first `history_s` seconds of data, handed over at once for warm-up)."""

    def __init__(self, source: ReplaySource, history_s: float = 0.0) -> None:
        self.source = source
        self.instruments = source.instruments
        self.subscriptions: dict[str, tuple[str, ...]] = {}
        self.history_ns = int(history_s * 1e9)
        self.history_ticks = 0
        self._connected = False
        self._it: Iterator[TickBatch] | None = None
        self._carry: TickBatch | None = None  # the first live piece, read while cutting history
        self._history_read = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        self._connected = True

    def subscribe(self, instrument_id: str, kinds: tuple[str, ...] = ("trades",)) -> None:
        self.subscriptions[instrument_id] = checked_subscription(self.instruments,
                                                                 instrument_id, kinds)

    def _batches(self) -> Iterator[TickBatch]:
        if self._it is None:
            subs = self.subscriptions
            self._it = (b for b in self.source.batches() if not subs or b.instrument_id in subs)
        return self._it

    def history(self) -> Iterator[TickBatch]:
        """The first `history_s` seconds of data (none when 0); read once, before `stream()`."""
        self._history_read = True
        if self.history_ns <= 0:
            return
        t_end: int | None = None
        for batch in self._batches():
            if t_end is None:
                t_end = int(batch.ts_ns[0]) + self.history_ns
            cut = int(np.searchsorted(batch.ts_ns, t_end, side="left"))
            if cut > 0:
                self.history_ticks += cut
                yield batch.slice(0, cut) if cut < len(batch) else batch
            if cut < len(batch):
                self._carry = batch.slice(cut, len(batch))
                return

    def _live(self) -> Iterator[TickBatch]:
        """What follows the history window."""
        if not self._history_read:
            for _ in self.history():
                pass
        if self._carry is not None:
            carry, self._carry = self._carry, None
            yield carry
        yield from self._batches()

    async def close(self) -> None:
        self._connected = False


class ReplayDataClient(_SourceClient):
    def __init__(self, source: ReplaySource, speed: float = 0.0, history_s: float = 0.0) -> None:
        super().__init__(source, history_s)
        self.speed = speed

    async def stream(self) -> AsyncIterator[TickBatch]:
        async for batch in paced(self._live(), self.speed):
            yield batch


class PacedDataClient(_SourceClient):
    """Recorded or synthetic data replayed as a live feed, paced by a live clock.

    The first `history_s` seconds of data are handed over at once by `history()` (warm-up). Then
    `stream()` anchors the clock at the first live tick (`LiveClock.anchor`, sped up by its
    `speed`) and releases each tick once the clock has reached its timestamp, in pieces of at most
    `max_batch` ticks: a strategy sees the data as a socket would deliver it, at the pace the
    clock allows. `sleep` is injectable so tests never sleep."""

    def __init__(self, source: ReplaySource, clock: LiveClock, *, history_s: float = 0.0,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 max_batch: int = 4096) -> None:
        super().__init__(source, history_s)
        self.clock = clock
        self._sleep = sleep
        self._max_batch = max_batch

    def history(self) -> Iterator[TickBatch]:
        """As the base's; once it is read, the clock is anchored at the first live tick, so
        timers set from then on are on the data's time grid."""
        yield from super().history()
        if self._carry is None:  # no history asked for: read the first live batch to anchor
            self._carry = next(self._batches(), None)
        if self._carry is not None:
            self.clock.anchor(int(self._carry.ts_ns[0]))

    async def stream(self) -> AsyncIterator[TickBatch]:
        if not self._history_read:
            for _ in self.history():
                pass
        clock = self.clock
        for batch in self._live():
            n = len(batch)
            i = 0
            while i < n:
                now = clock.now_ns()
                j = min(int(np.searchsorted(batch.ts_ns, now, side="right")), i + self._max_batch)
                if j <= i:  # the next tick is not due yet
                    await self._sleep(clock.wall_seconds_until(int(batch.ts_ns[i])))
                    continue
                yield batch if (i, j) == (0, n) else batch.slice(i, j)
                i = j
