"""Per-stage latency samples, reported as p50/p99 in microseconds.

Uses `time.perf_counter_ns` (a measurement of our own code, not trading time). Samples go into
preallocated numpy buffers so recording stays cheap on the hot path.
"""

from __future__ import annotations

import time

import numpy as np


class _Series:
    __slots__ = ("buf", "n", "items")

    def __init__(self, capacity: int) -> None:
        self.buf = np.empty(capacity, dtype=np.int64)
        self.n = 0
        self.items = 0


class StageTimer:
    def __init__(self, capacity: int = 1 << 20) -> None:
        self._capacity = capacity
        self._series: dict[str, _Series] = {}

    def _get(self, stage: str) -> _Series:
        series = self._series.get(stage)
        if series is None:
            series = self._series[stage] = _Series(self._capacity)
        return series

    def record(self, stage: str, elapsed_ns: int, items: int = 1) -> None:
        series = self._get(stage)
        n = series.n
        if n < self._capacity:  # past capacity the first samples stand for the run
            series.buf[n] = elapsed_ns
            series.n = n + 1
        series.items += items

    def wrap(self, stage: str, fn):  # type: ignore[no-untyped-def]
        """Return `fn` wrapped so each call is recorded under `stage` (two clock reads and an
        array store per call)."""
        clock = time.perf_counter_ns
        series = self._get(stage)
        buf = series.buf
        cap = self._capacity

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                n = series.n
                if n < cap:
                    buf[n] = clock() - t0
                    series.n = n + 1
                series.items += 1

        return timed

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage, series in self._series.items():
            n = series.n
            if n == 0:
                continue
            samples = series.buf[:n] / 1000.0
            out[stage] = {
                "p50": round(float(np.percentile(samples, 50)), 3),
                "p99": round(float(np.percentile(samples, 99)), 3),
                "max": round(float(samples.max()), 3),
                "count": n,
                "items": series.items,
            }
        return out
