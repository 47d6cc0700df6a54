"""Volume profile, LVN and skew (spec features.md 3.3): the spec vector, LVN rules, degenerate
profiles, the binning kernel against a pure-Python reference, and the fused kernel of the rolling
state (`profile_stats`, numpy's summation replayed) against `compute_profile`: bit for bit except the
skew, which is compared to round-off (see `assert_skew_close`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.configbase import ConfigError
from himari.daemon.matrices.lvn import (SD_FLOOR_BINS, ProfileConfig, ProfileOutput,
                                         VolumeProfileState, bin_moments, compute_profile, find_lvn,
                                         np_sum, profile_stats, profile_volume, warmup)

warmup()


def ref_profile(bars: list[tuple[float, float, float]], lo: float, hi: float, nb: int) -> list[float]:
    w = (hi - lo) / nb
    out = [0.0] * nb
    for h, l, v in bars:
        if h == l:
            out[min(nb - 1, int(math.floor((l - lo) / w)))] += v
            continue
        for k in range(nb):
            e0, e1 = lo + k * w, (hi if k == nb - 1 else lo + (k + 1) * w)
            ov = min(h, e1) - max(l, e0)
            if ov > 0:
                out[k] += v * ov / (h - l)
    return out


def test_spec_vector() -> None:
    cfg = ProfileConfig(window=5, bins=4)
    state = VolumeProfileState(cfg)
    bars = [(102, 100, 200), (104, 102, 200), (101, 100, 100), (104, 103, 100), (102, 101, 50)]
    outs = [state.update(float(h), float(l), float(v), 103.7) for h, l, v in bars]
    assert outs[:4] == [None] * 4
    out = outs[-1]
    assert out is not None
    np.testing.assert_allclose(out.vols, [200, 150, 100, 200], rtol=1e-12)
    assert out.poc_price == pytest.approx(100.5)  # POC bin 0 (tie with bin 3: lower price)
    assert out.lvn is not None
    assert out.lvn.price == pytest.approx(102.5)
    assert out.lvn.strength == pytest.approx(0.5)
    assert out.lvn.distance_pct == pytest.approx(1.157184, abs=1e-6)
    assert out.distance_col == pytest.approx(0.578592, abs=1e-6)
    assert out.strength_col == pytest.approx(0.5)
    assert out.mu == pytest.approx(101.961538, abs=1e-6)
    assert out.sd == pytest.approx(1.216261, abs=1e-6)
    assert out.skew == pytest.approx(0.089556, abs=1e-6)
    assert out.skew_col == pytest.approx(0.089317, abs=1e-6)


def test_lvn_rules() -> None:
    # Two LVNs equidistant from the close: the lower price wins.
    lvn = find_lvn(np.array([5.0, 1.0, 5.0, 1.0, 5.0]), 0.0, 1.0, 2.5, 0.7)
    assert lvn is not None and lvn.price == 1.5 and lvn.strength == pytest.approx(0.8)
    # The nearer one wins otherwise.
    lvn = find_lvn(np.array([5.0, 1.0, 5.0, 1.0, 5.0]), 0.0, 1.0, 3.4, 0.7)
    assert lvn is not None and lvn.price == 3.5
    # A plateau is not a strict local minimum; edges never count.
    assert find_lvn(np.array([5.0, 1.0, 1.0, 5.0]), 0.0, 1.0, 2.0, 0.7) is None
    assert find_lvn(np.array([1.0, 5.0, 1.0]), 0.0, 1.0, 2.0, 0.7) is None
    # The threshold is strict: 7 < 0.7 * 10 fails, 6.9 passes.
    assert find_lvn(np.array([10.0, 7.0, 10.0]), 0.0, 1.0, 1.0, 0.7) is None
    assert find_lvn(np.array([10.0, 6.9, 10.0]), 0.0, 1.0, 1.0, 0.7) is not None


def test_flat_range_and_zero_volume() -> None:
    cfg = ProfileConfig(window=3, bins=4)
    flat = compute_profile(np.full(3, 50.0), np.full(3, 50.0), np.ones(3), 50.0, cfg)
    assert flat.lvn is None and flat.skew == 0.0 and flat.distance_col == 1.0 and flat.strength_col == 0.0
    zero = compute_profile(np.array([3.0, 2.0, 4.0]), np.array([1.0, 1.0, 2.0]), np.zeros(3), 2.0, cfg)
    assert zero.lvn is None and zero.skew == 0.0 and zero.distance_col == 1.0
    assert float(zero.vols.sum()) == 0.0


def test_single_bin_profile_has_zero_skew() -> None:
    vols = np.zeros(24)
    vols[7] = 123.456789
    assert bin_moments(vols) == (0.0, 7.0, 0.0)


def test_point_bars_go_to_their_bin_and_hi_to_the_last() -> None:
    out = profile_volume(np.array([10.0, 12.0, 14.0]), np.array([10.0, 12.0, 10.0]),
                         np.array([3.0, 5.0, 8.0]), 10.0, 14.0, 4)
    # Bar 0 at lo -> bin 0; bar 1 at 12 = the edge of bin 2; bar 2 spreads 2 per bin.
    np.testing.assert_allclose(out, [5.0, 2.0, 7.0, 2.0])
    top = profile_volume(np.array([14.0, 14.0]), np.array([10.0, 14.0]), np.array([4.0, 6.0]),
                         10.0, 14.0, 4)
    np.testing.assert_allclose(top, [1.0, 1.0, 1.0, 7.0])


bar_st = st.tuples(st.floats(1.0, 200.0), st.floats(0.0, 50.0), st.floats(0.0, 1e6))


@settings(max_examples=60, deadline=None)
@given(st.lists(bar_st, min_size=1, max_size=48), st.integers(3, 30))
def test_kernel_matches_reference_and_conserves_volume(raw: list[tuple[float, float, float]],
                                                       nb: int) -> None:
    # (low, span, volume); a zero span makes a point bar; quantize to create exact edge hits.
    bars = [(round(l + s, 1), round(l, 1), v) for l, s, v in raw]
    lo = min(b[1] for b in bars)
    hi = max(b[0] for b in bars)
    if hi <= lo:
        return
    h, l, v = (np.array([b[i] for b in bars]) for i in range(3))
    got = profile_volume(h, l, v, lo, hi, nb)
    np.testing.assert_allclose(got, ref_profile(bars, lo, hi, nb), rtol=1e-9, atol=1e-6)
    assert got.sum() == pytest.approx(v.sum(), rel=1e-9, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1e6), min_size=3, max_size=30))
def test_skew_matches_direct_formula(vols_list: list[float]) -> None:
    vols = np.array(vols_list)
    skew, mu, sd = bin_moments(vols)
    assert math.isfinite(skew)
    total = vols.sum()
    if total <= 0 or sd == 0.0:
        assert skew == 0.0
        return
    c = 100.0 + 0.25 * (np.arange(len(vols)) + 0.5)  # arbitrary bin centres: skew is affine-invariant
    m = (vols * c).sum() / total
    s = math.sqrt((vols * (c - m) ** 2).sum() / total)
    if s < 1e-6:  # the direct formula is itself rounding noise here
        return
    assert skew == pytest.approx((vols * (c - m) ** 3).sum() / (total * s ** 3), rel=1e-6, abs=1e-9)


def test_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        ProfileConfig(bins=2)
    assert err.value.key == "strategic.profile.bins"


SKEW_RTOL = 1e-12


def assert_skew_close(got: float, want: float, vols: np.ndarray) -> None:
    """The kernel's skew against `bin_moments`'s, to round-off, not bit for bit: the reference's
    `dev ** 3` is numpy's `power`, which on AVX-512 CPUs takes a SIMD path one ulp away from the
    kernel's `math.pow` (and `sd ** 3` likewise). The terms `v dev^3` largely cancel, so the error is
    relative to the skew's scale `sum(v |dev|^3) / (sum(v) sd^3)`, not to the skew itself."""
    total = float(vols.sum())
    scale = 0.0  # no spread (or below the kernel's floor): both are exactly 0
    if total > 0:
        p = vols / total
        k = np.arange(len(vols), dtype=np.float64)
        mu = float((p * k).sum())
        sd = math.sqrt(float((p * (k - mu) ** 2).sum()))
        if sd >= SD_FLOOR_BINS:
            scale = float((p * np.abs(k - mu) ** 3).sum()) / sd ** 3
    assert got == pytest.approx(want, rel=SKEW_RTOL, abs=SKEW_RTOL * scale), (got, want, scale)


def assert_same_output(got: ProfileOutput | None, want: ProfileOutput | None) -> None:
    """Every field equal (nan equal to nan), the LVN and the bin volumes included; the skew and its
    column to round-off (`assert_skew_close`)."""
    assert (got is None) == (want is None)
    if got is None or want is None:
        return
    for name, g, w in zip(ProfileOutput._fields, got, want):
        if name == "vols":
            np.testing.assert_array_equal(g, w)
        elif name == "lvn":
            assert (g is None) == (w is None), name
            if g is not None:
                assert tuple(g) == tuple(w), name
        elif name == "skew":
            assert_skew_close(g, w, want.vols)
        elif name == "skew_col":  # tanh has slope <= 1: the skew's tolerance covers it
            assert_skew_close(g, w, want.vols)
        else:
            assert g == w or (math.isnan(g) and math.isnan(w)), (name, g, w)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, -0.0, 1e-300])),
                max_size=300))
def test_np_sum_is_numpys_sum(xs: list[float]) -> None:
    a = np.array(xs, dtype=np.float64)
    assert np_sum(a) == float(a.sum())  # bit for bit, pairwise blocks included


@settings(max_examples=60, deadline=None)
@given(st.lists(bar_st, min_size=1, max_size=60), st.integers(3, 30), st.floats(1.0, 260.0),
       st.sampled_from([0.3, 0.7, 1.0]))
def test_fused_kernel_equals_reference(raw: list[tuple[float, float, float]], nb: int, close: float,
                                       frac: float) -> None:
    bars = [(round(l + s, 1), round(l, 1), v) for l, s, v in raw]
    h, l, v = (np.array([b[i] for b in bars]) for i in range(3))
    cfg = ProfileConfig(window=len(bars), bins=nb, lvn_max_frac_of_poc=frac)
    want = compute_profile(h, l, v, close, cfg)
    ok, lo, hi, vols, lvn_k, strength, dist_pct, skew, mu_k, sd_k, poc_k = profile_stats(
        h, l, v, close, nb, frac)
    assert ok == (want.poc_price == want.poc_price)
    np.testing.assert_array_equal(vols, want.vols)
    assert_skew_close(skew, want.skew, want.vols)
    if ok:
        width = (hi - lo) / nb
        assert (lo + (mu_k + 0.5) * width, sd_k * width) == (want.mu, want.sd)
        assert lo + (poc_k + 0.5) * width == want.poc_price
        assert (lvn_k >= 0) == (want.lvn is not None)
        if want.lvn is not None:
            assert (lo + (lvn_k + 0.5) * width, strength, dist_pct) == tuple(want.lvn)


@settings(max_examples=25, deadline=None)
@given(st.lists(bar_st, min_size=1, max_size=40), st.integers(1, 9), st.integers(3, 12))
def test_rolling_state_equals_reference_on_each_window(raw: list[tuple[float, float, float]],
                                                       window: int, nb: int) -> None:
    cfg = ProfileConfig(window=window, bins=nb)
    state = VolumeProfileState(cfg)
    bars = [(round(l + s, 1), round(l, 1), v) for l, s, v in raw]
    for i, (h, l, v) in enumerate(bars):
        close = round(l + 0.3 * (h - l), 2)
        got = state.update(h, l, v, close)
        if i < window - 1:
            assert got is None
            continue
        w = bars[i + 1 - window:i + 1]
        want = compute_profile(np.array([b[0] for b in w]), np.array([b[1] for b in w]),
                               np.array([b[2] for b in w]), close, cfg)
        assert_same_output(got, want)


def test_nonfinite_window_gives_the_empty_profile() -> None:
    state = VolumeProfileState(ProfileConfig(window=2, bins=4))
    state.update(10.0, 9.0, 1.0, 9.5)
    got = state.update(math.nan, 9.0, 1.0, 9.5)
    want = compute_profile(np.array([10.0, math.nan]), np.array([9.0, 9.0]), np.ones(2), 9.5,
                           ProfileConfig(window=2, bins=4))
    assert got is not None and got.lvn is None and math.isnan(got.poc_price)
    assert_same_output(got, want)
