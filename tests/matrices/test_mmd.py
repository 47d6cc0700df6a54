"""MMD regime score (spec features.md 3.4): the spec's properties, the kernels against a pure-Python
reference, degenerate input and the rolling state's windows; the fast path (`mmd2_window`, the
vectorized exp, the bracketed median) against the straightforward kernels on random input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from himari.daemon.configbase import ConfigError
from himari.daemon.matrices.mmd import (MmdConfig, MmdState, exp_neg_sum,
                                         median_pair_sq_dist, median_sq_dist, mmd2_fixed,
                                         mmd2_unbiased, mmd2_window, score, standardize, warmup,
                                         workspace_size)

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


def test_subnormal_median_keeps_the_kernel_finite() -> None:
    # Found by hypothesis: sigma^2 = 1.6e-311 makes 1 / (2 sigma^2) overflow; 0 * inf was nan.
    x = np.array([[4.0283447e-164, 0.0], [0.0, 0.0]])
    y = np.zeros((2, 2))
    want, want_sigma = ref_mmd(x, y)
    got, sigma = mmd2_unbiased(x, y)
    assert math.isfinite(got) and got == pytest.approx(want, abs=1e-12) and sigma == want_sigma
    z, work, hint = window_of(x, y)
    assert mmd2_window(z, 0, 2, 2, work, hint) == (got, sigma)


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


# ---- the fast path against the reference kernels

def window_of(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z (2, m + n), a workspace and an empty hint for `mmd2_window`."""
    z = np.ascontiguousarray(np.vstack([x, y]).T)
    hint = np.full(4, np.nan)
    hint[3] = 0.0
    return z, np.empty(workspace_size(len(x), len(y))), hint


def fsum_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """MMD2_u with exactly rounded sums over math.exp terms (a tighter reference than either kernel)."""
    xs, ys = standardize(x, y)
    inv = 1.0 / (2.0 * sigma * sigma)

    def ks(a: np.ndarray, b: np.ndarray, same: bool) -> float:
        return math.fsum(math.exp(-float(((a[i] - b[j]) ** 2).sum()) * inv)
                         for i in range(len(a)) for j in range(i + 1 if same else 0, len(b)))

    m, n = len(x), len(y)
    return (2 * ks(xs, xs, True) / (m * (m - 1)) + 2 * ks(ys, ys, True) / (n * (n - 1))
            - 2 * ks(xs, ys, False) / (m * n))


point = st.floats(-5, 5).map(lambda v: round(v, 1))  # one decimal: ties and duplicate points


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 40), st.just(2)), elements=point),
       arrays(np.float64, st.tuples(st.integers(2, 12), st.just(2)), elements=point),
       st.floats(0.0, 3.0), st.floats(0.5, 2.0))
def test_window_kernel_matches_reference(x: np.ndarray, y: np.ndarray, guess: float,
                                         width: float) -> None:
    want, want_sigma = mmd2_unbiased(x, y)
    z, work, hint = window_of(x, y)
    # A cold start, then any bracket (good, bad or empty) as the previous-median hint.
    for h in (np.nan, guess):
        hint[0], hint[1], hint[2] = h, width, 1.0 / width
        got, sigma = mmd2_window(z, 0, len(x), len(y), work, hint)
        assert sigma == want_sigma  # the same squared distances, so the same median bit for bit
        assert got == pytest.approx(want, rel=1e-12, abs=1e-13)  # kernel terms are O(1)


def test_window_kernel_default_sizes_and_offset() -> None:
    rng = np.random.default_rng(8)
    z = np.vstack([rng.normal(0, 1e-3, 300), np.abs(rng.normal(2e-3, 1e-3, 300))])
    work = np.empty(workspace_size(240, 48))
    hint = np.full(4, np.nan)
    hint[3] = 0.0
    passes = []
    for start in (0, 5, 6, 12):
        x = z[:, start:start + 240].T.copy()
        y = z[:, start + 240:start + 288].T.copy()
        got, sigma = mmd2_window(z, start, 240, 48, work, hint)
        passes.append(hint[3])
        want, want_sigma = mmd2_unbiased(x, y)
        assert sigma == want_sigma
        assert abs(got - want) < 1e-13
        if start == 0:  # both kernels sum in float64; this one is exactly rounded
            assert abs(got - fsum_mmd2(x, y, sigma)) < 1e-13
    assert np.diff(passes).tolist() == [1, 1, 1]  # with a hint, one pass over the pairs


def test_window_kernel_nonfinite() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(20, 2))
    y = rng.normal(size=(6, 2))
    y[2, 1] = math.nan  # only the test sample: sigma is defined, MMD2 is not
    z, work, hint = window_of(x, y)
    got, sigma = mmd2_window(z, 0, 20, 6, work, hint)
    assert math.isnan(got) and sigma == mmd2_unbiased(x, y)[1]
    x[3, 0] = math.nan
    z, work, hint = window_of(x, y)
    got, sigma = mmd2_window(z, 0, 20, 6, work, hint)
    assert math.isnan(got) and math.isnan(sigma)
    assert math.isnan(hint[0])  # a failed window leaves no hint


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 60), st.just(2)), elements=point),
       st.floats(-1.0, 30.0), st.floats(-1.0, 30.0))
def test_bracketed_median_matches_sorting(x: np.ndarray, lo: float, hi: float) -> None:
    npairs = len(x) * (len(x) - 1) // 2
    dist = np.empty(npairs)
    got, passes = median_pair_sq_dist(x[:, 0].copy(), x[:, 1].copy(), lo, hi, np.empty(npairs),
                                      dist)
    assert got == median_sq_dist(x)
    assert 1 <= passes <= 4
    i, j = np.triu_indices(len(x), 1)  # the distances are left behind, row-major
    np.testing.assert_array_equal(dist, ((x[j] - x[i]) ** 2).sum(1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, 2000.0), st.sampled_from([0.0, 5e-324, 708.0, 1e300])),
                min_size=1, max_size=1200),
       st.sampled_from([0.0, 1e-3, 0.5, 1.0, 3.7]))
def test_vectorized_exp_matches_math_exp(ds: list[float], inv: float) -> None:
    d = np.array(ds)
    ebuf, tbuf = np.empty(64), np.empty(64)  # several chunks
    terms = [math.exp(-v * inv) for v in ds]
    assert exp_neg_sum(d, inv, ebuf, tbuf) == pytest.approx(math.fsum(terms), rel=1e-14, abs=1e-300)
    for v, want in zip(ds[:50], terms):  # each term within 2 ulp, or 0 below exp(-708)
        got = exp_neg_sum(np.array([v]), inv, ebuf, tbuf)
        assert abs(got - want) <= 4.5e-16 * want or (want <= math.exp(-708.0) and got == 0.0)


def ref_state(closes: np.ndarray, highs: np.ndarray, lows: np.ndarray,
              cfg: MmdConfig) -> list[tuple[float, float]]:
    """(MMD2_u, sigma) per bar, recomputed by `mmd2_unbiased` on the window copied out."""
    z: list[tuple[float, float]] = []
    out = []
    w = cfg.test + cfg.reference
    for t in range(len(closes)):
        if t > 0:
            ok = closes[t] > 0 and closes[t - 1] > 0
            z.append((math.log(closes[t] / closes[t - 1]) if ok else math.nan,
                      math.log(highs[t] / lows[t])))
        if len(z) < w:
            out.append((math.nan, math.nan))
            continue
        a = np.array(z[-w:])
        out.append(mmd2_unbiased(a[:cfg.reference], a[cfg.reference:]))
    return out


def test_rolling_state_matches_recomputed_windows() -> None:
    cfg = MmdConfig(test=6, reference=15)
    rng = np.random.default_rng(10)
    n = 120
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n) * np.where(np.arange(n) > 70, 4, 1)))
    closes[40] = 0.0  # a bad price: nan until it leaves the window
    highs = np.abs(closes) * (1 + rng.uniform(0, 0.01, n)) + 1e-9
    lows = highs * (1 - rng.uniform(0.001, 0.02, n))
    state = MmdState(cfg)
    want = ref_state(closes, highs, lows, cfg)
    finite = 0
    for t in range(n):
        got = state.update(closes[t], highs[t], lows[t])
        mmd2, sigma = want[t]
        if t >= cfg.valid_from:  # nan only in the test sample still gives a sigma
            assert state.last_sigma == sigma or (math.isnan(sigma) and math.isnan(state.last_sigma))
        if math.isnan(mmd2):
            assert math.isnan(got) and math.isnan(state.last_mmd2)
            continue
        finite += 1
        assert state.last_mmd2 == pytest.approx(mmd2, rel=1e-12, abs=1e-14)
        assert got == score(state.last_mmd2)
    assert finite > 50 and math.isnan(want[45][0])
    assert any(math.isnan(m2) and math.isfinite(sg) for m2, sg in want)  # nan in Y only
