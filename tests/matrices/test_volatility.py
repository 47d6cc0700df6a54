"""Relative volatility (spec features.md 3.5): the alternating-returns vector, degenerate windows,
validity, and the std kernel against a pure-Python reference."""

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
