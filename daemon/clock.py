"""Time comes from events.

Strategies, risk and the order manager read time only through a `Clock`. The replay clock is
advanced by event timestamps and fires its timers in timestamp order; the live clock reads the wall
clock. Nothing else in the hot path may call `time.time()` or `datetime.now()`.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

TimerCallback = Callable[[int], None]


class Clock(Protocol):
    def now_ns(self) -> int: ...

    def set_timer(self, ts_ns: int, callback: TimerCallback) -> None: ...


class ReplayClock:
    """A clock driven by event time. `advance_to` fires every timer due at or before `ts_ns`,
    in timestamp order (ties in the order they were set), each seeing the clock at its own time."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._timers: list[tuple[int, int, TimerCallback]] = []
        self._seq = itertools.count()

    def now_ns(self) -> int:
        return self._now

    def set_timer(self, ts_ns: int, callback: TimerCallback) -> None:
        heapq.heappush(self._timers, (ts_ns, next(self._seq), callback))

    def next_timer_ns(self) -> int | None:
        return self._timers[0][0] if self._timers else None

    def advance_to(self, ts_ns: int) -> None:
        while self._timers and self._timers[0][0] <= ts_ns:
            due, _, callback = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            callback(due)
        if ts_ns > self._now:  # time never runs backwards
            self._now = ts_ns


class LiveClock:
    """Wall-clock time. Timers are driven by the live runner's timer task (`run_due`); it is told
    (`on_new_timer`) when a timer earlier than the one it sleeps towards is set. `advance_to` (the
    replay loop calls it at each event) only fires timers already due: live, data never moves time.

    Paper trading on recorded or synthetic data runs the same clock sped up: after
    `anchor(data_ns)` the clock reads `data_ns + (wall - wall_at_anchor) * speed`, so the data
    keeps its own timestamps, bars close on its time grid, and everything is still paced by the
    wall clock (`speed = 1` and no anchor is plain wall time)."""

    def __init__(self, speed: float = 1.0, wall_ns: Callable[[], int] = time.time_ns) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed {speed} must be > 0")
        self.speed = speed
        self._wall_ns = wall_ns
        self._origin: tuple[int, int] | None = None  # (data ns, wall ns) at the anchor
        self._timers: list[tuple[int, int, TimerCallback]] = []
        self._seq = itertools.count()
        self.on_new_timer: Callable[[int], None] | None = None

    def anchor(self, data_ns: int) -> None:
        self._origin = (data_ns, self._wall_ns())

    def now_ns(self) -> int:
        wall = self._wall_ns()
        if self._origin is None:
            return wall
        data0, wall0 = self._origin
        return data0 + int((wall - wall0) * self.speed)

    def wall_seconds_until(self, ts_ns: int) -> float:
        """Wall seconds until the clock reads `ts_ns` (<= 0 when it already has)."""
        return (ts_ns - self.now_ns()) / (1e9 * self.speed)

    def set_timer(self, ts_ns: int, callback: TimerCallback) -> None:
        heapq.heappush(self._timers, (ts_ns, next(self._seq), callback))
        if self.on_new_timer is not None and self._timers[0][0] == ts_ns:
            self.on_new_timer(ts_ns)

    def advance_to(self, ts_ns: int) -> None:
        if self._timers and self._timers[0][0] <= ts_ns:
            self.run_due()

    def next_timer_ns(self) -> int | None:
        return self._timers[0][0] if self._timers else None

    def run_due(self) -> int:
        now = self.now_ns()
        fired = 0
        while self._timers and self._timers[0][0] <= now:
            due, _, callback = heapq.heappop(self._timers)
            callback(due)
            fired += 1
        return fired
