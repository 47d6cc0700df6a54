"""Bar building: time, tick-count and volume bars, by Numba kernels over tick batches.

Rules (spec features.md section 1):
- Time bars sit on UTC epoch boundaries: a bar of period D covers [kD, (k+1)D) and is labelled
  `ts_close = (k+1)D`. A tick stamped exactly (k+1)D belongs to the next bar. The bar closes when the
  first tick at or after `ts_close` arrives (replay) — it is complete *before* that tick.
- An interval without ticks produces no bar. The first time bar of a session is dropped (and counted)
  unless its first tick lies exactly on the bar's open; the incomplete last bar of a replay is dropped.
- Tick bars close after `count` ticks; volume bars after at least `threshold` lots (the closing tick
  is inside the bar; its whole size counts, no splitting). Their `ts_close` is the last tick's time.

How the runner uses a builder: bars depend only on ticks, never on orders, so `start_batch(batch)`
runs the kernel over the whole batch in one call and records every bar close with the *gap* at which
it happened: gap g means "between tick g-1 and tick g". A time bar closed by tick k closes at gap k;
a tick/volume bar completed by tick k closes at gap k+1. The runner then walks those closes in order
(`pending_gap` peeks at the next one, `take_bar` emits it) and publishes each bar once the venue has
processed every tick before its gap, so an order placed on the bar fills against the next tick,
exactly as live. One kernel call per batch keeps Numba's per-call dispatch cost off the tick path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numba
import numpy as np

from himari.daemon.events import Bar, TickBatch
from himari.daemon.ids import IdSource

KIND_TIME, KIND_TICK, KIND_VOLUME = 0, 1, 2

# Builder state slots (one int64 array so the kernel can update it in place).
S_OPEN_FLAG, S_TS_OPEN, S_TS_CLOSE, S_O, S_H, S_L, S_C, S_V, S_N, S_LAST_TS, S_SEEN_ANY, S_FIRST_PARTIAL = range(12)
STATE_SIZE = 12

NO_EVENT = -1

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SPEC_RE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|ticks?|t|lots|v)\s*$")


class BarSpecError(ValueError):
    pass


@dataclass(frozen=True)
class BarSpec:
    """A parsed bar spec: "5m", "30m", "1m", "15s", "1h" (time), "250t"/"250ticks" (tick count),
    "1000v"/"1000lots" (volume in lots)."""

    text: str
    kind: int
    param: int  # period in ns, tick count, or volume threshold in lots

    @staticmethod
    def parse(text: str) -> "BarSpec":
        m = _SPEC_RE.match(text)
        if not m:
            raise BarSpecError(
                f"bar spec {text!r} is not allowed: use N followed by s, m, h, d (time), "
                "t/ticks (tick count) or v/lots (volume), e.g. '5m', '250t', '1000v'")
        n, unit = int(m.group(1)), m.group(2)
        if n <= 0:
            raise BarSpecError(f"bar spec {text!r}: the number must be > 0")
        if unit in _UNITS:
            return BarSpec(text.strip(), KIND_TIME, n * _UNITS[unit] * 1_000_000_000)
        if unit in ("t", "tick", "ticks"):
            return BarSpec(text.strip(), KIND_TICK, n)
        return BarSpec(text.strip(), KIND_VOLUME, n)


@numba.njit(cache=True)
def scan_bars(state, kind, param, ts, px, sz, start, stop):
    """Advance one builder over ticks [start, stop). Returns the gap index of the first bar close
    (the bar is left in `state` for the caller to read and reset), or NO_EVENT (-1) when the ticks
    ran out first (then every tick in the range has been added)."""
    for k in range(start, stop):
        t = ts[k]
        p = px[k]
        if kind == KIND_TIME:
            if state[S_OPEN_FLAG] == 1 and t >= state[S_TS_CLOSE]:
                return k  # complete before tick k
            if state[S_OPEN_FLAG] == 0:
                t_open = (t // param) * param
                state[S_OPEN_FLAG] = 1
                state[S_TS_OPEN] = t_open
                state[S_TS_CLOSE] = t_open + param
                # The session's first bar is partial unless its first tick is on the open.
                state[S_FIRST_PARTIAL] = 1 if (state[S_SEEN_ANY] == 0 and t != t_open) else 0
                state[S_SEEN_ANY] = 1
                state[S_O] = p
                state[S_H] = p
                state[S_L] = p
                state[S_V] = 0
                state[S_N] = 0
        elif state[S_OPEN_FLAG] == 0:
            state[S_OPEN_FLAG] = 1
            state[S_TS_OPEN] = t
            state[S_O] = p
            state[S_H] = p
            state[S_L] = p
            state[S_V] = 0
            state[S_N] = 0
            state[S_SEEN_ANY] = 1
        if p > state[S_H]:
            state[S_H] = p
        if p < state[S_L]:
            state[S_L] = p
        state[S_C] = p
        state[S_V] += sz[k]
        state[S_N] += 1
        state[S_LAST_TS] = t
        if kind == KIND_TICK and state[S_N] >= param:
            state[S_TS_CLOSE] = t
            return k + 1
        if kind == KIND_VOLUME and state[S_V] >= param:
            state[S_TS_CLOSE] = t
            return k + 1
    return NO_EVENT


# Columns of the per-batch bar-close table written by `scan_batch`.
E_GAP, E_TS_OPEN, E_TS_CLOSE, E_O, E_H, E_L, E_C, E_V, E_N, E_PARTIAL = range(10)
EVENT_COLUMNS = 10


@numba.njit(cache=True)
def scan_batch(state, kind, param, ts, px, sz, start, stop, out):
    """Run `scan_bars` over ticks [start, stop), writing one row of `out` per bar close (its gap,
    fields and whether it is the dropped partial first bar). Returns the number of rows. `out` needs
    stop - start + 1 rows at most (one close per gap)."""
    m = 0
    k = start
    while k < stop:
        g = scan_bars(state, kind, param, ts, px, sz, k, stop)
        if g == NO_EVENT:
            break
        out[m, E_GAP] = g
        out[m, E_TS_OPEN] = state[S_TS_OPEN]
        out[m, E_TS_CLOSE] = state[S_TS_CLOSE]
        out[m, E_O] = state[S_O]
        out[m, E_H] = state[S_H]
        out[m, E_L] = state[S_L]
        out[m, E_C] = state[S_C]
        out[m, E_V] = state[S_V]
        out[m, E_N] = state[S_N]
        out[m, E_PARTIAL] = state[S_FIRST_PARTIAL]
        m += 1
        state[S_OPEN_FLAG] = 0
        state[S_FIRST_PARTIAL] = 0
        k = g
    return m


class BarBuilder:
    """One bar spec for one instrument: owns the kernel state and turns closes into `Bar` events."""

    def __init__(self, spec: BarSpec, instrument_id: str, ids: IdSource) -> None:
        self.spec = spec
        self.instrument_id = instrument_id
        self._ids = ids
        self.state = np.zeros(STATE_SIZE, dtype=np.int64)
        self._table = np.zeros((0, EVENT_COLUMNS), dtype=np.int64)
        self._n = 0  # bar closes found in the current batch
        self._cursor = 0  # the next one to emit
        self.bars_closed = 0
        self.partial_first_dropped = 0
        self.incomplete_last_dropped = 0

    def start_batch(self, batch: TickBatch) -> None:
        """Find every bar close in the batch (one kernel call)."""
        n = len(batch)
        if self._table.shape[0] < n + 1:
            self._table = np.zeros((n + 1, EVENT_COLUMNS), dtype=np.int64)
        self._n = int(scan_batch(self.state, self.spec.kind, self.spec.param, batch.ts_ns,
                                 batch.price, batch.size, 0, n, self._table))
        self._cursor = 0

    @property
    def pending_gap(self) -> int:
        """The gap of this builder's next bar close in the current batch, or NO_EVENT."""
        return int(self._table[self._cursor, E_GAP]) if self._cursor < self._n else NO_EVENT

    def take_bar(self) -> Bar | None:
        """Emit the next bar close (None for the dropped partial first bar of a session)."""
        row = self._table[self._cursor].tolist()
        self._cursor += 1
        if row[E_PARTIAL]:
            self.partial_first_dropped += 1
            return None
        self.bars_closed += 1
        return Bar(event_id=self._ids.next("B"), ts_ns=row[E_TS_CLOSE],
                   instrument_id=self.instrument_id, spec=self.spec.text, ts_open=row[E_TS_OPEN],
                   ts_close=row[E_TS_CLOSE], open=row[E_O], high=row[E_H], low=row[E_L],
                   close=row[E_C], volume=row[E_V], n_ticks=row[E_N])

    @property
    def open_bar_close_ns(self) -> int | None:
        """When the open time bar ends (its `ts_close`), or None (no open bar / not a time bar)."""
        if self.spec.kind != KIND_TIME or not self.state[S_OPEN_FLAG]:
            return None
        return int(self.state[S_TS_CLOSE])

    def close_due(self, now_ns: int) -> Bar | None:
        """Live: close the open time bar once the clock has passed its end, even when no tick
        arrived after it (a replay closes it at the next tick, with the same result). Returns the
        bar, or None (nothing due, or the dropped partial first bar). Call between batches only."""
        end = self.open_bar_close_ns
        if end is None or now_ns < end:
            return None
        st = self.state
        partial = bool(st[S_FIRST_PARTIAL])
        st[S_OPEN_FLAG] = 0
        st[S_FIRST_PARTIAL] = 0
        if partial:
            self.partial_first_dropped += 1
            return None
        self.bars_closed += 1
        return Bar(event_id=self._ids.next("B"), ts_ns=end, instrument_id=self.instrument_id,
                   spec=self.spec.text, ts_open=int(st[S_TS_OPEN]), ts_close=end,
                   open=int(st[S_O]), high=int(st[S_H]), low=int(st[S_L]), close=int(st[S_C]),
                   volume=int(st[S_V]), n_ticks=int(st[S_N]))

    def finish(self) -> None:
        """End of data: the bar still open is incomplete and is dropped."""
        if self.state[S_OPEN_FLAG]:
            self.incomplete_last_dropped += 1
            self.state[S_OPEN_FLAG] = 0


def warmup() -> None:
    """Compile the kernel for every bar kind."""
    ts = np.array([0, 1, 2], dtype=np.int64)
    px = np.array([10, 11, 9], dtype=np.int64)
    sz = np.array([1, 1, 1], dtype=np.int64)
    out = np.zeros((4, EVENT_COLUMNS), dtype=np.int64)
    for kind, param in ((KIND_TIME, 2), (KIND_TICK, 2), (KIND_VOLUME, 2)):
        scan_batch(np.zeros(STATE_SIZE, dtype=np.int64), kind, param, ts, px, sz, 0, 3, out)
