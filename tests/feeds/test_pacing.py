"""Replay pacing with a fake clock: no real sleeping."""

from __future__ import annotations

import numpy as np
import pytest

from himari.daemon.events import TickBatch
from himari.daemon.feeds.pacing import paced

S = 1_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def batch(ts_s: list[float]) -> TickBatch:
    ts = (np.array(ts_s) * S).astype(np.int64)
    return TickBatch.from_trades("X", ts, np.arange(1, len(ts) + 1), np.ones(len(ts)))


async def collect(batches, speed, clock, **kw):
    out = []
    async for b in paced(batches, speed, sleep=clock.sleep, now=clock.now, **kw):
        out.append((clock.t, b))
    return out


async def test_speed_zero_passes_batches_through_unchanged():
    clock = FakeClock()
    src = [batch([0, 5, 10]), batch([3600, 7200])]
    out = await collect(src, 0, clock)
    assert [b for _, b in out] == src
    assert clock.sleeps == [0, 0] and clock.t == 1000.0


async def test_recorded_time_maps_to_wall_time_over_speed():
    clock = FakeClock()
    out = await collect([batch([10, 11, 13]), batch([17])], 2.0, clock)
    assert [len(b) for _, b in out] == [1, 1, 1, 1]
    assert [t for t, _ in out] == [1000.0, 1000.5, 1001.5, 1003.5]  # (ts - 10) / 2
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert sum(clock.sleeps) == pytest.approx((17 - 10) / 2.0)


async def test_ticks_within_the_resolution_go_together():
    clock = FakeClock()
    out = await collect([batch([0, 0.0004, 0.0009, 0.0015, 0.0016])], 1.0, clock, resolution_s=0.001)
    assert [b.ts_ns.tolist() for _, b in out] == [[0, 400_000, 900_000], [1_500_000, 1_600_000]]
    assert clock.sleeps == [pytest.approx(0.0015)]


async def test_a_slow_consumer_gets_the_backlog_without_sleeping():
    clock = FakeClock()
    got = []
    async for b in paced([batch([0]), batch([1]), batch([2]), batch([30])], 1.0,
                         sleep=clock.sleep, now=clock.now):
        got.append(b)
        clock.t += 5.0  # the consumer takes 5 s per batch
    assert len(got) == 4
    assert clock.sleeps == [pytest.approx(15.0)]  # only tick 30 (due at 1030, now 1015) waits


async def test_long_gaps_are_shortened_to_max_gap():
    clock = FakeClock()
    out = await collect([batch([0, 1, 172_800, 172_801])], 1.0, clock, max_gap_s=5.0)
    assert clock.sleeps == [1.0, 5.0, 1.0]
    assert out[-1][0] == 1007.0


async def test_async_sources_and_empty_batches():
    clock = FakeClock()

    async def source():
        yield batch([])
        yield batch([0, 4])

    out = await collect(source(), 4.0, clock)
    assert [len(b) for _, b in out] == [1, 1] and clock.sleeps == [1.0]
