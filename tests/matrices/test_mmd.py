"""MMD regime score (spec features.md 3.4): the spec's properties, the kernels against a pure-Python
reference, degenerate input and the rolling state's windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from himari.daemon.configbase import ConfigError
from himari.daemon.matrices.mmd import (MmdConfig, MmdState, median_sq_dist, mmd2_fixed,
                                         mmd2_unbiased, score, warmup)

warmup()


def ref_mmd(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Steps 3-5 in plain Python loops."""
    m, dim = x.shape
    n = y.shape[0]
    xs = [[0.0] * dim for _ in range(m)]
    ys = [[0.0] * dim for _ in range(n)]
    for c in range(dim):
        col = [float(x[i, c]) for i in range(m)]
        mean = sum(col) / m
        sd = max(math.sqrt(sum((v - mean) ** 2 for v in col) / m), 1e-8)
        for i in range(m):
            xs[i][c] = (x[i, c] - mean) / sd
        for i in range(n):
            ys[i][c] = (y[i, c] - mean) / sd

    def d2(a: list[float], b: list[float]) -> float:
        return sum((p - q) ** 2 for p, q in zip(a, b))

    pairs = sorted(d2(xs[i], xs[j]) for i in range(m) for j in range(i + 1, m))
    half = len(pairs) // 2
    med = pairs[half] if len(pairs) % 2 else (pairs[half - 1] + pairs[half]) / 2
    s2 = med if med != 0 else 1.0

    def k(a: list[float], b: list[float]) -> float:
        return math.exp(-d2(a, b) / (2 * s2))

    kxx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(ys[i], ys[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(a, b) for a in xs for b in ys) / (m * n)
    return kxx + kyy - 2 * kxy, math.sqrt(s2)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 12), st.just(2)), elements=st.floats(-5, 5)),
       arrays(np.float64, st.tuples(st.integers(2, 8), st.just(2)), elements=st.floats(-5, 5)))
def test_kernel_matches_reference(x: np.ndarray, y: np.ndarray) -> None:
    got, sigma = mmd2_unbiased(x, y)
    want, want_sigma = ref_mmd(x, y)
    assert sigma == pytest.approx(want_sigma, rel=1e-9)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert 0.0 <= score(got) <= math.sqrt(2.0)


def test_identical_samples_give_two_a_minus_one_over_m() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 2))
    mmd2, _ = mmd2_unbiased(x, x.copy())
    # A = mean off-diagonal kernel value, from the reference.
    kxx, _ = ref_mmd(x, x)  # = 2A - 2(A m(m-1) + m)/m^2 = 2(A - 1)/m
    assert mmd2 == pytest.approx(kxx, rel=1e-9)
    xs = (x - x.mean(0)) / x.std(0)
    d2 = ((xs[:, None, :] - xs[None, :, :]) ** 2).sum(-1)
    iu = np.triu_indices(30, 1)
    s2 = float(np.median(d2[iu]))
    a = float(np.exp(-d2[iu] / (2 * s2)).mean())
    assert mmd2 == pytest.approx(2 * (a - 1) / 30, rel=1e-9)
    assert mmd2 <= 0 and score(mmd2) == 0.0


def test_swapping_samples_leaves_mmd2_unchanged() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 2))
    y = rng.normal(0.5, 2.0, size=(9, 2))
    for sigma in (0.3, 1.0, 2.5):
        assert mmd2_fixed(x, y, sigma) == pytest.approx(mmd2_fixed(y, x, sigma), rel=1e-12)


def test_shifted_sample_scores_far_above_resampled() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(240, 2))
    resampled = x[rng.choice(240, 48, replace=False)]
    shifted = rng.normal(size=(48, 2)) + 4.0  # four reference standard deviations
    s_resampled = score(mmd2_unbiased(x, resampled)[0])
    s_shifted = score(mmd2_unbiased(x, shifted)[0])
    assert s_shifted > 0.8
    assert s_resampled < 0.15
    assert s_shifted > 5 * s_resampled


def test_flat_input_is_finite_zero() -> None:
    z = np.zeros((10, 2))
    mmd2, sigma = mmd2_unbiased(z, z[:4].copy())
    assert sigma == 1.0 and math.isfinite(mmd2) and score(mmd2) == 0.0


def test_median_even_count_is_mean_of_middle_pair() -> None:
    # Points 0, 1, 3 on a line: squared distances 1, 9, 4 (odd); add 6: 1, 9, 36, 4, 25, 9 (even).
    assert median_sq_dist(np.array([[0.0], [1.0], [3.0]])) == 4.0
    assert median_sq_dist(np.array([[0.0], [1.0], [3.0], [6.0]])) == 9.0
    assert median_sq_dist(np.array([[0.0], [1.0], [3.0], [7.0]])) == (9.0 + 16.0) / 2


def test_state_windows() -> None:
    cfg = MmdConfig(test=5, reference=8)
    state = MmdState(cfg)
    rng = np.random.default_rng(6)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 30)))
    highs = closes * (1 + rng.uniform(0, 0.01, 30))
    lows = closes * (1 - rng.uniform(0, 0.01, 30))
    outs = [state.update(c, h, l) for c, h, l in zip(closes, highs, lows)]
    assert all(math.isnan(o) for o in outs[:13]) and all(math.isfinite(o) for o in outs[13:])
    t = 29
    z = np.array([[math.log(closes[i] / closes[i - 1]), math.log(highs[i] / lows[i])]
                  for i in range(t - 12, t + 1)])
    assert outs[t] == pytest.approx(score(ref_mmd(z[:8], z[8:])[0]), rel=1e-9, abs=1e-12)
    assert MmdConfig().valid_from == 288


def test_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        MmdConfig(test=1)
    assert err.value.key == "strategic.mmd.test"
