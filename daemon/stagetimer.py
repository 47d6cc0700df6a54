"""Per-stage latency samples, reported as p50/p99 in microseconds.

Uses `time.perf_counter_ns` (a measurement of our own code, not trading time). Samples go into
preallocated numpy buffers so recording stays cheap on the hot path.
"""

from __future__ import annotations

import time

import numpy as np


class StageTimer:
    def __init__(self, capacity: int = 1 << 20) -> None:
        self._capacity = capacity
        self._buf: dict[str, np.ndarray] = {}
        self._n: dict[str, int] = {}
        self._units: dict[str, int] = {}  # items per sample (e.g. ticks in a batch)
        self.enabled = True

    def record(self, stage: str, elapsed_ns: int, items: int = 1) -> None:
        if not self.enabled:
            return
        buf = self._buf.get(stage)
        if buf is None:
            buf = self._buf[stage] = np.empty(self._capacity, dtype=np.int64)
            self._n[stage] = 0
            self._units[stage] = 0
        n = self._n[stage]
        if n < self._capacity:
            buf[n] = elapsed_ns
            self._n[stage] = n + 1
        self._units[stage] += items

    def wrap(self, stage: str, fn):  # type: ignore[no-untyped-def]
        """Return `fn` wrapped so each call is recorded under `stage`."""
        clock = time.perf_counter_ns
        record = self.record

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                record(stage, clock() - t0)

        return timed

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage, buf in self._buf.items():
            n = self._n[stage]
            if n == 0:
                continue
            samples = buf[:n] / 1000.0
            out[stage] = {
                "p50": round(float(np.percentile(samples, 50)), 3),
                "p99": round(float(np.percentile(samples, 99)), 3),
                "max": round(float(samples.max()), 3),
                "count": n,
                "items": self._units[stage],
            }
        return out
