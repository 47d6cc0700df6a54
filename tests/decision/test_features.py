"""decision/features.py and decision/regime.py: the 257-value vector, statistics, strategic inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from himari.decision import layout as L
from himari.decision.features import (FLAT, FeatureStats, PositionState, feature_matrix,
                                      feature_vector, fit_stats, strategic_inputs,
                                      strategic_inputs_batch)
from himari.decision.regime import RegimeRule, crisis_threshold, regime_from, regimes
from himari.training.dataset import random_dataset

MON_1430 = 1_704_205_800_000_000_000  # 2024-01-02 14:30 UTC is a Tuesday; see below


def _mats(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (60, 7)).astype(np.float32),
            rng.uniform(-1, 1, (48, 13)).astype(np.float32))


def test_slots_follow_the_layout() -> None:
    tac, strat = _mats()
    pos = PositionState(sign=-1, upnl_atr=-2.5, bars_in_position=250, drawdown_buffer=1.7)
    x = feature_vector(tac, strat, L.BULLISH, None, pos, MON_1430)
    assert x.shape == (257,) and x.dtype == np.float32
    assert x[0] == pytest.approx(2.5)  # D9 target for bullish
    assert np.array_equal(x[L.X_TACTICAL], tac[-20:].ravel())  # oldest first, row-major
    assert np.array_equal(x[L.X_STRATEGIC], strat[-8:].ravel())
    assert np.array_equal(x[L.X_REGIME], [0, 0, 0, 1])
    assert np.array_equal(x[L.X_POSITION], np.float32([-1, -2.5, 1.0, 1.0]))  # capped, clipped
    # 14:30 UTC: hour 14.5; 2024-01-02 is a Tuesday (weekday 1)
    h, d = 2 * math.pi * 14.5 / 24, 2 * math.pi * 1 / 7
    assert x[L.X_TIME] == pytest.approx([math.sin(h), math.cos(h), math.sin(d), math.cos(d)],
                                        abs=1e-6)


def test_explicit_target_sharpe_and_missing_strategic() -> None:
    tac, _ = _mats()
    x = feature_vector(tac, None, L.CRISIS, 3.0, FLAT, MON_1430)
    assert x[0] == 3.0 and np.array_equal(x[L.X_REGIME], [1, 0, 0, 0])
    neutral = x[L.X_STRATEGIC].reshape(8, 13)
    assert np.all(neutral[:, 4] == 1) and np.all(np.delete(neutral, 4, axis=1) == 0)


@pytest.mark.parametrize("bad", ["nan", "inf", "shape"])
def test_bad_input_raises_a_clear_error(bad: str) -> None:
    tac, strat = _mats()
    if bad == "shape":
        with pytest.raises(ValueError, match=r"strategic matrix has shape \(30, 13\)"):
            feature_vector(tac, strat[:30], 2, None, FLAT, 0)
        return
    tac[3, 2] = np.nan if bad == "nan" else np.inf
    with pytest.raises(ValueError, match=r"tactical matrix has a non-finite value at \[3, 2\]"):
        feature_vector(tac, strat, 2, None, FLAT, 0)


def test_feature_matrix_rows_are_bit_identical_to_feature_vector() -> None:
    ds = random_dataset(500, 2, seed=4)
    rng = np.random.default_rng(1)
    idx = np.arange(20, 500, 7)
    reg = rng.integers(0, 4, len(idx))
    pos = np.column_stack([rng.integers(-1, 2, len(idx)), rng.normal(0, 30, len(idx)),
                           rng.integers(0, 300, len(idx)), rng.uniform(-0.5, 1.5, len(idx))])
    X = feature_matrix(ds, idx, regime=reg, position=pos)
    for row, i in enumerate(idx):
        v = feature_vector(ds.tactical[i], ds.strategic[i], int(reg[row]), None,
                           PositionState(*pos[row]), int(ds.ts_ns[i]))
        assert np.array_equal(v, X[row]), i
    out = np.empty(257, np.float32)
    assert feature_vector(ds.tactical[20], ds.strategic[20], 2, None, FLAT, int(ds.ts_ns[20]),
                          out=out) is out


def test_stats_leave_unscaled_slots_alone_and_floor_std() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(3.0, 2.0, (1000, 257)).astype(np.float32)
    X[:, 5] = 7.0  # constant column: std floored, no division by zero
    st = fit_stats(X)
    z = st.normalize(X)
    assert np.array_equal(z[:, L.X_REGIME], X[:, L.X_REGIME])  # unchanged, bit for bit
    assert np.array_equal(z[:, L.X_TIME], X[:, L.X_TIME])
    assert abs(z[:, 10].mean()) < 1e-4 and z[:, 10].std() == pytest.approx(1.0, rel=1e-3)
    assert np.all(z[:, 5] == 0) and np.isfinite(z).all()
    big = X[0].copy()
    big[7] = 1e30
    assert st.normalize(big)[7] == 10.0  # clipped z-score
    again = FeatureStats.from_tensors(st.to_tensors())
    assert np.array_equal(again.normalize(X[:3]), z[:3])
    with pytest.raises(ValueError, match="x has 100 values, stats have 257"):
        st.normalize(X[:, :100])


def test_strategic_inputs_are_group_means_plus_context() -> None:
    _, strat = _mats(3)
    strat[-1, 11] = math.tanh(math.log(1.5))  # v_rel = 1.5
    ts = MON_1430
    m, w, r = strategic_inputs(strat, (-1, 0.8), ts)
    assert m.shape == (10,) and w.shape == (10,) and r.shape == (9,)
    assert m[:4] == pytest.approx(strat[:, [0, 1, 8, 9]].mean(axis=0), abs=1e-6)
    assert w[:4] == pytest.approx(strat[:, [2, 3, 4, 5]].mean(axis=0), abs=1e-6)
    assert r[:3] == pytest.approx(strat[:, [10, 11, 12]].mean(axis=0), abs=1e-6)
    h = 2 * math.pi * 14.5 / 24
    ctx = [0.8, -1.0, math.log(1.5), math.sin(h), math.cos(h), 1 / 6]
    for part in (m[4:], w[4:], r[3:]):
        assert part == pytest.approx(ctx, abs=1e-5)
    mb, wb, rb = strategic_inputs_batch(strat[None], 0.8, -1, ts)
    assert np.array_equal(mb[0], m) and np.array_equal(rb[0], r)
    none = strategic_inputs(strat, None, ts)[0]
    assert none[4] == 0 and none[5] == 0
    with pytest.raises(ValueError, match="non-finite"):
        bad = strat.copy()
        bad[0, 0] = np.nan
        strategic_inputs(bad, None, ts)


def test_regime_rule() -> None:
    v = np.linspace(0.5, 2.0, 101)
    thr = crisis_threshold(v)
    assert thr == pytest.approx(np.percentile(v, 95))
    assert regime_from(2.0, thr) == L.CRISIS
    assert regime_from(1.0, thr) == L.NEUTRAL
    assert regime_from(1.0, thr, [0.7, 0.2, 0.1]) == L.BEARISH
    assert regime_from(1.0, thr, [0.1, 0.2, 0.7]) == L.BULLISH
    assert regime_from(1.0, thr, [0.1, 0.25, 0.65]) == L.NEUTRAL  # needs > 0.65
    assert regime_from(2.0, thr, [0.1, 0.2, 0.7]) == L.CRISIS  # crisis wins
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]])
    assert regimes(np.array([1.0, 1.0, 1.0, 2.0]), thr, probs).tolist() == [1, 3, 2, 0]
    rule = RegimeRule(thr, ensemble=lambda s, syn, ts: [0.05, 0.05, 0.9])
    assert rule(1.0, np.zeros((48, 13))) == (L.BULLISH, 2.5)
    assert rule(1.0, None) == (L.NEUTRAL, 2.0)  # no matrix: no ensemble opinion

    def broken(s: np.ndarray, syn: object, ts: int) -> list[float]:
        raise RuntimeError("boom")

    failing = RegimeRule(thr, broken)
    assert failing(1.0, np.zeros((48, 13))) == (L.NEUTRAL, 2.0) and failing.ensemble_errors == 1
    assert RegimeRule(thr)(5.0) == (L.CRISIS, 0.5)


def test_feature_matrix_accepts_plain_matrix_arrays() -> None:
    """A fixture with plain (N, 60, 7) / (N, 48, 13) arrays gives the same rows as a BarDataset."""
    ds = random_dataset(80, 1, seed=6)

    class Plain:
        tactical = np.asarray(ds.tactical)
        strategic = np.asarray(ds.strategic)
        ts_ns = ds.ts_ns

        def __len__(self) -> int:
            return 80

    assert np.array_equal(feature_matrix(Plain(), np.arange(80)), feature_matrix(ds))


def test_feature_matrix_names_a_non_finite_bar() -> None:
    ds = random_dataset(80, 1, seed=6)
    ds.tac_rows[ds.tac_index[30]] = np.nan
    with pytest.raises(ValueError, match="non-finite tactical rows at bar 30"):
        feature_matrix(ds, [29, 30])
