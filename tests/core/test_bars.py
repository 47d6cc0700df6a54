"""Bar builders against a tick-by-tick Python reference, and the boundary rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.bars import NO_EVENT, BarBuilder, BarSpec, BarSpecError
from himari.daemon.events import TickBatch
from himari.daemon.ids import IdSource

S = 1_000_000_000


def run_builder(spec: str, batches: list[TickBatch]) -> tuple[list[tuple], BarBuilder]:
    b = BarBuilder(BarSpec.parse(spec), "X", IdSource())
    out = []
    for batch in batches:
        b.start_batch(batch)
        while b.pending_gap != NO_EVENT:
            bar = b.take_bar()
            if bar is not None:
                out.append((bar.ts_open, bar.ts_close, bar.open, bar.high, bar.low, bar.close,
                            bar.volume, bar.n_ticks))
    b.finish()
    return out, b


def reference(spec: str, ts, px, sz) -> list[tuple]:
    """Tick-by-tick reference of the rules in daemon/bars.py."""
    s = BarSpec.parse(spec)
    bars, cur, first = [], None, True
    for t, p, q in zip(ts.tolist(), px.tolist(), sz.tolist()):
        if s.kind == 0:
            if cur is not None and t >= cur["close"]:
                if not cur["partial"]:
                    bars.append(cur)
                cur = None
            if cur is None:
                o = t // s.param * s.param
                cur = dict(open_ts=o, close=o + s.param, o=p, h=p, l=p, c=p, v=0, n=0,
                           partial=first and t != o)
                first = False
        elif cur is None:
            cur = dict(open_ts=t, close=t, o=p, h=p, l=p, c=p, v=0, n=0, partial=False)
        cur["h"], cur["l"], cur["c"] = max(cur["h"], p), min(cur["l"], p), p
        cur["v"] += q
        cur["n"] += 1
        if (s.kind == 1 and cur["n"] >= s.param) or (s.kind == 2 and cur["v"] >= s.param):
            cur["close"] = t
            bars.append(cur)
            cur = None
    return [(b["open_ts"], b["close"], b["o"], b["h"], b["l"], b["c"], b["v"], b["n"]) for b in bars]


def batch(ts, px, sz) -> TickBatch:
    return TickBatch.from_trades("X", np.asarray(ts), np.asarray(px), np.asarray(sz))


def test_time_bar_boundaries():
    # A tick exactly on 60 s belongs to the next bar; the first bar starts on its open.
    ts = np.array([0, 10, 59, 60, 61, 130, 185]) * S
    px = np.array([100, 105, 99, 101, 102, 103, 104])
    sz = np.array([1, 2, 3, 4, 5, 6, 7])
    bars, b = run_builder("1m", [batch(ts, px, sz)])
    assert bars == [
        (0, 60 * S, 100, 105, 99, 99, 6, 3),
        (60 * S, 120 * S, 101, 102, 101, 102, 9, 2),
        (120 * S, 180 * S, 103, 103, 103, 103, 6, 1),
    ]
    assert b.incomplete_last_dropped == 1  # the bar holding the 185 s tick never closed


def test_first_partial_time_bar_dropped_and_gaps_make_no_bars():
    ts = np.array([30, 70, 400, 500]) * S  # starts mid-bar; 2-6 minutes are empty
    bars, b = run_builder("1m", [batch(ts, [1, 2, 3, 4], [1, 1, 1, 1])])
    assert [x[0] for x in bars] == [60 * S, 360 * S]
    assert b.partial_first_dropped == 1


def test_tick_and_volume_bars_close_on_the_completing_tick():
    ts = np.arange(7) * S
    px = np.array([10, 12, 9, 11, 13, 8, 10])
    sz = np.array([5, 5, 5, 1, 20, 1, 1])
    bars, _ = run_builder("3t", [batch(ts, px, sz)])
    assert bars == [(0, 2 * S, 10, 12, 9, 9, 15, 3), (3 * S, 5 * S, 11, 13, 8, 8, 22, 3)]
    vbars, _ = run_builder("10v", [batch(ts, px, sz)])
    assert vbars == [(0, S, 10, 12, 10, 12, 10, 2), (2 * S, 4 * S, 9, 13, 9, 13, 26, 3)]


@pytest.mark.parametrize("bad", ["", "5", "0m", "-1m", "5x", "m5"])
def test_bad_specs_are_refused(bad):
    with pytest.raises(BarSpecError):
        BarSpec.parse(bad)


@settings(max_examples=60, deadline=None)
@given(
    spec=st.sampled_from(["1s", "7s", "1m", "5t", "17t", "50v", "3t"]),
    steps=st.lists(st.integers(0, 3 * S), min_size=1, max_size=300),
    seed=st.integers(0, 2**31 - 1),
    cuts=st.lists(st.integers(0, 300), max_size=4),
)
def test_kernel_matches_reference_across_batch_splits(spec, steps, seed, cuts):
    rng = np.random.default_rng(seed)
    ts = np.cumsum(np.asarray(steps, dtype=np.int64)) + 10**18
    px = rng.integers(1, 50, ts.shape[0])
    sz = rng.integers(0, 20, ts.shape[0])
    edges = sorted({0, ts.shape[0], *[min(c, ts.shape[0]) for c in cuts]})
    parts = [batch(ts[a:b], px[a:b], sz[a:b]) for a, b in zip(edges, edges[1:]) if b > a]
    got, _ = run_builder(spec, parts)
    assert got == reference(spec, ts, px, sz)
