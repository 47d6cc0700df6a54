"""Pace a replay: map recorded time to wall time.

With `speed <= 0` batches pass through as fast as the consumer takes them (one `sleep(0)` per batch
lets other tasks run). With `speed > 0` a tick stamped `ts` is released at wall time
`w0 + (ts - ts0) / (1e9 * speed)`, where `ts0` is the first tick and `w0` the wall time it was
seen: each batch is cut where a tick falls into a new `resolution_s` slot of wall time, and each
piece waits until its first tick is due. A consumer that falls behind gets the backlog without
sleeping. Gaps (weekends, halts) longer than `max_gap_s` of wall time are shortened to it by moving
the anchor. The wall clock (`now`, monotonic) and `sleep` are injectable so tests never sleep;
pacing is the one place where wall time matters, event time still comes from the ticks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable

import numpy as np

from himari.daemon.events import TickBatch


async def _aiter(batches: Iterable[TickBatch] | AsyncIterable[TickBatch]) -> AsyncIterator[TickBatch]:
    if isinstance(batches, AsyncIterable):
        async for b in batches:
            yield b
    else:
        for b in batches:
            yield b


async def paced(batches: Iterable[TickBatch] | AsyncIterable[TickBatch], speed: float,
                sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                now: Callable[[], float] = time.monotonic, *, resolution_s: float = 0.001,
                max_gap_s: float = math.inf) -> AsyncIterator[TickBatch]:
    if not speed > 0:  # also NaN
        async for batch in _aiter(batches):
            yield batch
            await sleep(0)
        return
    if resolution_s <= 0 or max_gap_s <= 0:
        raise ValueError("paced: resolution_s and max_gap_s must be > 0")
    ts0: int | None = None
    wall0 = 0.0
    ns_per_wall_s = 1e9 * speed
    async for batch in _aiter(batches):
        n = len(batch)
        if n == 0:
            continue
        if ts0 is None:
            ts0, wall0 = int(batch.ts_ns[0]), now()
        due = (batch.ts_ns - ts0) / ns_per_wall_s  # wall seconds after wall0
        slot = np.floor(due / resolution_s)
        cuts = (np.flatnonzero(slot[1:] != slot[:-1]) + 1).tolist()
        for start, stop in zip([0, *cuts], [*cuts, n]):
            delay = wall0 + float(due[start]) - now()
            if delay > max_gap_s:
                wall0 -= delay - max_gap_s
                delay = max_gap_s
            if delay > 0:
                await sleep(delay)
            yield batch if (start, stop) == (0, n) else batch.slice(start, stop)
