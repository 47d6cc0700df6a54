"""MLMI (spec features.md 3.1): the k = 3 vector, the kNN kernel against a pure-Python reference,
the store, Wilder RSI and the whole indicator against an independent batch reference; the fast ring
kernels (kNN bounded by the previous query, heap fallback; WMA on a doubled ring) against the
straightforward ones, evictions and hint misses included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.configbase import ConfigError
from himari.daemon.matrices import mlmi
from himari.daemon.matrices.mlmi import (MlmiConfig, MlmiState, MlmiStore, WilderRsi, kth_smallest,
                                          knn_vote, knn_vote_ring, mth_smallest_newest_first,
                                          push_wma, warmup)

warmup()


def ref_knn(p1: list[float], p2: list[float], y: list[float], q1: float, q2: float,
            k: int) -> tuple[float, int]:
    if not p1 or not (math.isfinite(q1) and math.isfinite(q2)):
        return 0.0, 0
    d = [math.sqrt((a - q1) ** 2 + (b - q2) ** 2) for a, b in zip(p1, p2)]
    dstar = sorted(d)[min(k, len(d)) - 1]
    chosen = [lab for dj, lab in zip(d, y) if dj <= dstar]
    return float(sum(chosen)), len(chosen)


def test_spec_vector_k3() -> None:
    store = MlmiStore(10)
    # Prices 100, 101, 100.5, 102 give the spec's labels 0, +1, -1, +1.
    labels = [store.add(p1, p2, price) for p1, p2, price in
              [(40, 60, 100.0), (50, 50, 101.0), (60, 40, 100.5), (45, 55, 102.0)]]
    assert labels == [0.0, 1.0, -1.0, 1.0]
    votes, k_eff = store.vote(48.0, 52.0, 3)
    # distances 11.314, 2.828, 16.971, 4.243; D* = 11.314; neighbours 1, 2, 4.
    assert (votes, k_eff) == (2.0, 3)
    assert votes / k_eff == pytest.approx(0.666667, abs=1e-6)


def test_ties_are_all_kept() -> None:
    p1 = np.array([0.0, 1.0, -1.0, 0.0, 5.0])
    p2 = np.array([1.0, 0.0, 0.0, -1.0, 5.0])
    y = np.array([1.0, 1.0, -1.0, 1.0, -1.0])
    # Four entries at distance 1 from the origin; k = 2 keeps all four.
    assert knn_vote(p1, p2, y, 0.0, 0.0, 2) == (2.0, 4)


def test_empty_store_and_nonfinite_query() -> None:
    e = np.zeros(0)
    assert knn_vote(e, e, e, 1.0, 2.0, 3) == (0.0, 0)
    a = np.array([1.0, 2.0])
    assert knn_vote(a, a, np.array([1.0, 1.0]), math.nan, 1.0, 3) == (0.0, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([-1.0, 0.0, 1.0])),
                min_size=1, max_size=40),
       st.integers(0, 6), st.integers(0, 6), st.integers(1, 50))
def test_knn_kernel_matches_reference(entries: list[tuple[int, int, float]], q1: int, q2: int,
                                      k: int) -> None:
    # Small integer grids make distance ties common.
    p1 = [float(e[0]) for e in entries]
    p2 = [float(e[1]) for e in entries]
    y = [e[2] for e in entries]
    got = knn_vote(np.array(p1), np.array(p2), np.array(y), float(q1), float(q2), k)
    assert got == ref_knn(p1, p2, y, float(q1), float(q2), k)


def test_store_ring_keeps_latest_and_labels_against_evicted_price() -> None:
    store = MlmiStore(3)
    for i, price in enumerate([10.0, 11.0, 12.0, 9.0, 9.0]):
        store.add(float(i), 0.0, price)
    assert store.n == 3 and store.total == 5
    # Entries 2, 3, 4 remain (p1 = 2, 3, 4) with labels +1, -1, +1 (9 >= 9).
    kept = sorted(zip(store.p1.tolist(), store.y.tolist()))
    assert kept == [(2.0, 1.0), (3.0, -1.0), (4.0, 1.0)]
    assert store.vote(0.0, 0.0, 10) == (1.0, 3)


def ref_rsi(closes: list[float], n: int) -> list[float]:
    out = [math.nan] * len(closes)
    ch = [closes[i] - closes[i - 1] for i in range(1, len(closes))]
    if len(ch) < n:
        return out
    up = sum(max(c, 0.0) for c in ch[:n]) / n
    dn = sum(max(-c, 0.0) for c in ch[:n]) / n
    for t in range(n, len(closes)):
        if t > n:
            c = ch[t - 1]
            up = (up * (n - 1) + max(c, 0.0)) / n
            dn = (dn * (n - 1) + max(-c, 0.0)) / n
        out[t] = 100.0 if dn == 0 else (0.0 if up == 0 else 100.0 - 100.0 / (1.0 + up / dn))
    return out


def test_wilder_rsi_matches_reference_and_edges() -> None:
    rng = np.random.default_rng(1)
    closes = list(100.0 + np.cumsum(rng.normal(0, 1, 80)))
    rsi = WilderRsi(5)
    got = [math.nan] + [rsi.update(closes[i] - closes[i - 1]) for i in range(1, 80)]
    want = ref_rsi(closes, 5)
    assert all(math.isnan(w) for w in want[:5]) and all(math.isnan(g) for g in got[:5])
    np.testing.assert_allclose(got[5:], want[5:], rtol=1e-12)
    flat, up, down = WilderRsi(3), WilderRsi(3), WilderRsi(3)
    for _ in range(4):
        r_flat, r_up, r_down = flat.update(0.0), up.update(1.0), down.update(-1.0)
    assert (r_flat, r_up, r_down) == (100.0, 100.0, 0.0)


def wma(x: list[float], t: int, n: int) -> float:
    if t - n + 1 < 0:
        return math.nan
    return sum((n - j) * x[t - j] for j in range(n)) / (n * (n + 1) / 2)


def ref_mlmi(closes: list[float], k: int,
             store_max: int | None = None) -> tuple[list[float], list[int], list[bool]]:
    """Independent batch MLMI with the default lengths (5/20 MAs, RSI 5/20, trend 20, signal 20)."""
    n = len(closes)
    rs, rf = ref_rsi(closes, 20), ref_rsi(closes, 5)
    p1 = [wma(rs, t, 20) if t >= 39 else math.nan for t in range(n)]
    p2 = [wma(rf, t, 20) if t >= 24 else math.nan for t in range(n)]
    maq = [wma(closes, t, 5) for t in range(n)]
    mas = [wma(closes, t, 20) for t in range(n)]
    store: list[tuple[float, float, float]] = []
    last_price = math.nan
    votes: list[float] = []
    values, signals, events = [], [], []
    for t in range(n):
        ev = t >= 20 and ((maq[t] > mas[t] and maq[t - 1] <= mas[t - 1])
                          or (maq[t] < mas[t] and maq[t - 1] >= mas[t - 1]))
        ok = math.isfinite(p1[t]) and math.isfinite(p2[t])
        if ev and ok:
            lab = 0.0 if not store else (1.0 if closes[t] >= last_price else -1.0)
            store.append((p1[t], p2[t], lab))
            if store_max is not None:
                store = store[-store_max:]
            last_price = closes[t]
        P, ke = ref_knn([s[0] for s in store], [s[1] for s in store], [s[2] for s in store],
                        p1[t], p2[t], k) if ok else (0.0, 0)
        values.append(P / ke if ke else 0.0)
        events.append(ev and ok)
        sig = 0
        if t >= 39:
            votes.append(P)
            i = len(votes) - 1
            if i >= 20:
                m_now, m_prev = wma(votes, i, 20), wma(votes, i - 1, 20)
                if votes[i] > m_now and votes[i - 1] <= m_prev:
                    sig = 1
                elif votes[i] < m_now and votes[i - 1] >= m_prev:
                    sig = -1
        signals.append(sig)
    return values, signals, events


def test_state_matches_batch_reference() -> None:
    rng = np.random.default_rng(7)
    # A trending-then-cycling series so the MAs cross often and the store fills.
    t = np.arange(500)
    closes = list(100 + 3 * np.sin(t / 7.0) + np.cumsum(rng.normal(0, 0.4, 500)))
    state = MlmiState(MlmiConfig(k=5))
    outs = [state.update(c) for c in closes]
    values, signals, events = ref_mlmi(closes, 5)
    assert sum(events) > 20
    assert [o.event for o in outs] == events
    np.testing.assert_allclose([o.value for o in outs], values, rtol=0, atol=1e-12)
    assert [o.signal for o in outs] == signals
    assert any(s != 0 for s in signals)
    # Validity: nothing before bar 39 (value) / 59 (signal).
    assert all(o.value == 0.0 and o.k_eff == 0 for o in outs[:39])
    assert math.isnan(outs[38].p1) and math.isfinite(outs[39].p1)
    assert all(o.signal == 0 for o in outs[:59])
    assert MlmiConfig().value_valid_from == 39 and MlmiConfig().signal_valid_from == 59


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        MlmiConfig(k=0)
    assert err.value.key == "strategic.mlmi.k"
    with pytest.raises(ConfigError):
        MlmiConfig(store_max=0)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=60), st.data())
def test_quickselect_matches_sorting(values: list[int], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(values) - 1))
    a = np.array(values, dtype=np.float64)
    assert kth_smallest(a, k) == sorted(values)[k]
    assert sorted(a.tolist()) == sorted(values)  # reordered, never changed


def test_state_with_a_wrapping_store_matches_batch_reference() -> None:
    rng = np.random.default_rng(12)
    t = np.arange(700)
    closes = list(100 + 3 * np.sin(t / 5.0) + np.cumsum(rng.normal(0, 0.4, 700)))
    state = MlmiState(MlmiConfig(k=7, store_max=25))
    outs = [state.update(c) for c in closes]
    values, signals, events = ref_mlmi(closes, 7, store_max=25)
    assert sum(events) > 35 and state.store.total == sum(events) and state.store.n == 25
    assert [o.event for o in outs] == events
    assert [o.value for o in outs] == pytest.approx(values, rel=0, abs=1e-12)
    assert [o.signal for o in outs] == signals


entry = st.tuples(st.integers(0, 6), st.integers(0, 6), st.floats(1.0, 2.0), st.integers(0, 6),
                  st.integers(0, 6))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 12), st.lists(entry, max_size=40), st.integers(1, 20))
def test_ring_knn_matches_reference_across_wraps(capacity: int,
                                                 entries: list[tuple[int, int, float, int, int]],
                                                 k: int) -> None:
    # One query per added entry: the hint of the previous query is reused, evictions included.
    store = MlmiStore(capacity)
    for a, b, price, q1, q2 in entries:
        store.add(float(a), float(b), price)
        n = store.n
        want = knn_vote(store.p1[:n].copy(), store.p2[:n].copy(), store.y[:n].copy(), float(q1),
                        float(q2), k)
        assert store.vote(float(q1), float(q2), k) == want
        assert want == ref_knn(store.p1[:n].tolist(), store.p2[:n].tolist(),
                               store.y[:n].tolist(), float(q1), float(q2), k)
    assert store.vote(math.inf, 1.0, k) == (0.0, 0)


def test_ring_knn_large_store() -> None:
    rng = np.random.default_rng(13)
    store = MlmiStore(10_000)
    for i in range(13_000):  # wraps; recent entries drift so the newest are nearest
        store.add(50 + 0.002 * i + rng.normal(0, 3), 50 + rng.normal(0, 3), float(rng.integers(3)))
    # A slowly moving query (the hint's bound is tight), then jumps (the bound is loose or fails).
    queries = [(76.0 + 0.3 * j, 50.0 - 0.2 * j) for j in range(5)] + [(40.0, 60.0), (50.0, 50.0)]
    for q1, q2 in queries:
        want = knn_vote(store.p1, store.p2, store.y, q1, q2, 200)
        assert store.vote(q1, q2, 200) == want and want[1] >= 200


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-4, 4), min_size=1, max_size=50), st.data())
def test_bounded_heap_selection_matches_sorting(values: list[int], data: st.DataObject) -> None:
    m = data.draw(st.integers(1, len(values)))
    newest = data.draw(st.integers(0, len(values) - 1))
    d = np.array(values, dtype=np.float64)
    assert mth_smallest_newest_first(d, m, newest, np.empty(m)) == sorted(values)[m - 1]
    assert d.tolist() == values  # read only


def test_ring_knn_kernel_direct_edges() -> None:
    a = np.array([1.0, 2.0, 3.0])
    e = np.empty(3)
    h = np.full(3, np.nan)
    assert knn_vote_ring(a, a, np.ones(3), 0, 0, 1.0, 1.0, 2, e, e.copy(), h) == (0.0, 0)
    assert knn_vote_ring(a, a, np.ones(3), 3, 0, 1.0, 1.0, 0, e, e.copy(), h) == (0.0, 0)
    assert knn_vote_ring(a, a, np.ones(3), 3, 0, math.nan, 1.0, 2, e, e.copy(), h) == (0.0, 0)
    assert math.isnan(h[2])  # no query, no hint


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=60), st.integers(1, 8), st.data())
def test_ring_wma_matches_wma(xs: list[float], cap: int, data: st.DataObject) -> None:
    n1 = data.draw(st.integers(1, cap))
    n2 = data.draw(st.integers(1, cap))
    buf = np.zeros(2 * cap)
    for i, x in enumerate(xs):
        w1, w2 = push_wma(buf, i % cap, x, n1, n2)
        seen = xs[:i + 1]
        if len(seen) >= n1:
            assert w1 == mlmi.wma(seen, n1)  # the same terms in the same order: bit for bit
        if len(seen) >= n2:
            assert w2 == mlmi.wma(seen, n2)
