"""Relative volatility (spec features.md 3.5): the alternating-returns vector, degenerate windows,
validity, the std kernel against a pure-Python reference, and the ring state against the std of each
window copied out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.configbase import ConfigError
from himari.daemon.matrices.volatility import (VolatilityState, VolConfig, rel_column, sample_std,
                                                warmup)

warmup()


def test_alternating_returns_vector() -> None:
    x = 0.003
    state = VolatilityState()
    c = 100.0
    out = state.update(c)
    for t in range(1, 241):
        c *= math.exp(x if t % 2 else -x)
        out = state.update(c)
    want = math.sqrt((30 / 29) / (240 / 239))
    assert want == pytest.approx(1.014974, abs=1e-6)
    assert out.v_rel == pytest.approx(want, rel=1e-9)
    assert out.column == pytest.approx(0.014862, abs=1e-6)
    assert out.column == pytest.approx(math.tanh(math.log(want)), rel=1e-12)
    assert out.v_short_pct == pytest.approx(100 * x * math.sqrt(30 / 29), rel=1e-9)


def test_validity() -> None:
    state = VolatilityState()
    outs = [state.update(100.0 + (t % 3)) for t in range(241)]
    assert all(math.isnan(o.v_short_pct) for o in outs[:30]) and math.isfinite(outs[30].v_short_pct)
    assert all(math.isnan(o.v_rel) for o in outs[:240]) and math.isfinite(outs[240].v_rel)


def test_flat_and_recently_flat() -> None:
    flat = VolatilityState(VolConfig(short=3, long=6))
    out = [flat.update(50.0) for _ in range(10)][-1]
    assert (out.v_rel, out.column) == (1.0, 0.0)  # v240 = 0 -> v_rel = 1
    calm = VolatilityState(VolConfig(short=3, long=6))
    for c in [50.0, 52.0, 49.0, 51.0, 51.0, 51.0, 51.0]:
        out = calm.update(c)
    assert out.v_short_pct == 0.0 and out.v_rel == 0.0 and out.column == -1.0


def test_rel_column_edges() -> None:
    assert rel_column(1.0) == 0.0
    assert rel_column(math.inf) == 1.0 and rel_column(1e200) == 1.0
    assert math.isnan(rel_column(math.nan))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=300))
def test_std_kernel_matches_reference(xs: list[float]) -> None:
    mean = sum(xs) / len(xs)
    want = math.sqrt(sum((v - mean) ** 2 for v in xs) / (len(xs) - 1))
    assert sample_std(np.array(xs)) == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_std_kernel_short_input() -> None:
    assert math.isnan(sample_std(np.array([1.0])))


def test_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        VolConfig(short=50, long=40)
    assert err.value.key == "strategic.vol.long"
    with pytest.raises(ConfigError):
        VolConfig(short=1)


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.floats(1.0, 1e4), st.just(0.0)), min_size=1, max_size=70),
       st.integers(2, 6), st.integers(0, 8))
def test_ring_state_equals_std_of_each_window(closes: list[float], short: int, extra: int) -> None:
    cfg = VolConfig(short=short, long=short + extra)
    state = VolatilityState(cfg)
    rets: list[float] = []
    for i, c in enumerate(closes):
        out = state.update(c)
        if i:
            p = closes[i - 1]
            rets.append(math.log(c / p) if c > 0 and p > 0 else math.nan)
        w = rets[-cfg.long:]
        want_s = 100.0 * sample_std(np.array(w[-short:])) if len(w) >= short else math.nan
        want_l = 100.0 * sample_std(np.array(w)) if len(w) >= cfg.long else math.nan
        assert same(out.v_short_pct, want_s) and same(out.v_long_pct, want_l)  # bit for bit
        if len(w) >= cfg.long:
            want_rel = 1.0 if want_l == 0.0 else want_s / want_l
            assert same(out.v_rel, want_rel) and same(out.column, rel_column(want_rel))
        else:
            assert math.isnan(out.v_rel) and math.isnan(out.column)
