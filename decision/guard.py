"""Robustness of the decision side: input checks, per-agent failure counting, time budget, benching.

Rules (spec decision.md 7, issue 14):
- a matrix with the wrong shape or a non-finite value is refused *for that decision* with a
  reason (`check_matrix`); the engine then answers HOLD / neutral, never raises into the bus;
- extreme but finite values are clipped (`CLIP`) before any agent sees them, so z-scoring in
  float32 stays finite;
- an agent that raises, returns a non-finite / malformed vote, or runs past its time budget is
  skipped for that decision and counted; after `bench_after` (5) consecutive failures it is benched
  for `cooldown_ns` (10 minutes of event time) and the ensemble goes on with the rest.

The time budget (`time_budget_us`, measured with `time.perf_counter_ns`) is 0 = off by default in
replay: a replay must give the same decisions on every run and machine, and wall-clock noise (a GC
pause, another process) would otherwise change which agents vote. Paper and live turn it on
(500 us by default) because there a slow agent really delays the order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

CLIP = 1e6  # raw feature magnitude cap: far beyond any real value, small enough for float32 maths
DEFAULT_BUDGET_US = 500
BENCH_AFTER = 5
COOLDOWN_NS = 600 * 1_000_000_000

OK, SKIPPED, BENCHED, FAILED, TIMEOUT = "ok", "skipped", "benched", "failed", "timeout"


class InputError(ValueError):
    """A matrix the decision cannot use (wrong shape, non-finite values)."""


def check_matrix(values: Any, rows: int, cols: int, name: str) -> np.ndarray:
    """`values` as a float32 (rows, cols) array, or InputError naming the problem."""
    if values is None:
        raise InputError(f"{name} matrix missing")
    arr = np.asarray(values)
    if arr.shape != (rows, cols):
        raise InputError(f"{name} matrix has shape {arr.shape}, expected ({rows}, {cols})")
    if arr.dtype != np.float32:
        try:
            arr = arr.astype(np.float32)
        except (TypeError, ValueError):
            raise InputError(f"{name} matrix has dtype {arr.dtype}, expected float32") from None
    top, bad = _scan(arr)
    if bad:
        raise InputError(f"{name} matrix has {bad} non-finite value(s)")
    if top > CLIP:
        arr = np.clip(arr, -CLIP, CLIP)
    return arr


@njit(cache=True)
def _scan(arr: np.ndarray) -> tuple[float, int]:
    """Largest |value| over the finite cells and the count of non-finite ones, in one pass."""
    top = 0.0
    bad = 0
    for v in arr.ravel():
        if not np.isfinite(v):
            bad += 1
        elif abs(v) > top:
            top = abs(v)
    return top, bad


def check_probs(probs: Any) -> list[float]:
    """A valid 3-way distribution (renormalised), or ValueError (counted as a failure)."""
    if len(probs) != 3:
        raise ValueError(f"vote has {len(probs)} probabilities, expected 3")
    p0, p1, p2 = float(probs[0]), float(probs[1]), float(probs[2])
    total = p0 + p1 + p2
    if not (math.isfinite(total) and total > 0.0) or min(p0, p1, p2) < 0.0:
        raise ValueError(f"vote probabilities {probs!r} are not a distribution")
    return [p0 / total, p1 / total, p2 / total]


class AgentGuard:
    """Counters and bench state of one agent (or team)."""

    __slots__ = ("name", "budget_ns", "bench_after", "cooldown_ns", "consecutive", "benched_until",
                 "calls", "ok", "failed", "timeouts", "benched_skips", "bench_count",
                 "last_error")

    def __init__(self, name: str, time_budget_us: int = 0, bench_after: int = BENCH_AFTER,
                 cooldown_ns: int = COOLDOWN_NS) -> None:
        self.name = name
        self.budget_ns = int(time_budget_us) * 1000
        self.bench_after = bench_after
        self.cooldown_ns = cooldown_ns
        self.consecutive = 0
        self.benched_until = -1
        self.calls = self.ok = self.failed = self.timeouts = 0
        self.benched_skips = self.bench_count = 0
        self.last_error = ""

    def available(self, ts_ns: int) -> bool:
        """False while benched (counted); the bench lifts at its event-time end."""
        if self.benched_until < 0:
            return True
        if ts_ns >= self.benched_until:
            self.benched_until = -1
            self.consecutive = 0
            return True
        self.benched_skips += 1
        return False

    def over_budget(self, elapsed_ns: int) -> bool:
        return 0 < self.budget_ns < elapsed_ns

    def success(self) -> None:
        self.calls += 1
        self.ok += 1
        self.consecutive = 0

    def failure(self, ts_ns: int, error: str, *, timeout: bool = False) -> None:
        self.calls += 1
        if timeout:
            self.timeouts += 1
        else:
            self.failed += 1
        self.last_error = error[:200]
        self.consecutive += 1
        if self.consecutive >= self.bench_after:
            self.benched_until = ts_ns + self.cooldown_ns
            self.bench_count += 1
            self.consecutive = 0

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls, "ok": self.ok, "failed": self.failed,
                "timeouts": self.timeouts, "benched": self.bench_count,
                "benched_skips": self.benched_skips, "last_error": self.last_error}
