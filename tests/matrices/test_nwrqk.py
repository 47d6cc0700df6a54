"""NW-RQK (spec features.md 3.2): weights, the 100 - 0.01 i vector, constant closes, direction changes,
validity, the kernel against a pure-Python reference, and the ring state against the kernel on each
window copied out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.configbase import ConfigError
from himari.daemon.matrices.nwrqk import NwrqkConfig, NwrqkState, nw_estimate, rq_weights, warmup

warmup()


def ref_y(closes: list[float], t: int, h: float = 8.0, r: float = 8.0, n: int = 27) -> float:
    w = [(1 + i * i / (2 * r * h * h)) ** (-r) for i in range(n)]
    return sum(w[i] * closes[t - i] for i in range(n)) / sum(w)


def test_weights_spec_values() -> None:
    w = rq_weights(8.0, 8.0, NwrqkConfig().window)
    assert w.shape == (27,)
    assert w[0] == 1.0
    assert w[1] == pytest.approx(0.992222, abs=1e-6)
    assert w[2] == pytest.approx(0.969292, abs=1e-6)
    assert w[26] == pytest.approx(0.017330, abs=1e-6)
    assert w.sum() == pytest.approx(10.967539, abs=1e-6)


def test_linear_series_vector() -> None:
    # C_{t-i} = 100 - 0.01 i: feed 40 closes rising by 0.01 and ending at 100.
    closes = [100.0 - 0.01 * (39 - j) for j in range(40)]
    state = NwrqkState()
    out = [state.update(c) for c in closes][-1]
    assert out.y == pytest.approx(99.935106, abs=1e-6)
    assert (100.0 - out.y) / 0.01 == pytest.approx(6.489387, abs=1e-6)  # lag in bars
    assert out.slope_pct == pytest.approx(0.0100075, abs=1e-7)
    assert out.slope_col == pytest.approx(0.099742, abs=1e-6)
    assert out.value_col == pytest.approx(-0.012979, abs=1e-6)
    assert out.change == 0


def test_constant_closes() -> None:
    state = NwrqkState()
    outs = [state.update(250.0) for _ in range(40)]
    for o in outs[27:]:
        assert (o.y, o.slope_pct, o.value_col, o.slope_col) == (250.0, 0.0, 0.0, 0.0)
        assert o.change == 0


def test_validity_windows() -> None:
    state = NwrqkState()
    outs = [state.update(100.0 + (t % 5)) for t in range(30)]
    assert all(math.isnan(o.y) for o in outs[:26]) and math.isfinite(outs[26].y)
    assert math.isnan(outs[26].slope_pct) and math.isfinite(outs[27].slope_pct)
    assert all(o.change == 0 for o in outs[:28])
    cfg = NwrqkConfig()
    assert (cfg.value_valid_from, cfg.slope_valid_from, cfg.change_valid_from) == (26, 27, 28)


def test_direction_changes_match_definition() -> None:
    # Up for 40 bars, down for 40, up again: y turns twice.
    closes = [100 + 0.5 * t for t in range(40)] + [120 - 0.5 * t for t in range(40)]
    closes += [100 + 0.5 * t for t in range(40)]
    state = NwrqkState()
    outs = [state.update(c) for c in closes]
    ys = [ref_y(closes, t) if t >= 26 else math.nan for t in range(len(closes))]
    want = []
    for t in range(len(closes)):
        ch = 0
        if t >= 28:
            if ys[t - 1] < ys[t] and ys[t - 2] > ys[t - 1]:
                ch = 1
            elif ys[t - 1] > ys[t] and ys[t - 2] < ys[t - 1]:
                ch = -1
        want.append(ch)
    got = [o.change for o in outs]
    assert got == want
    assert got.count(-1) == 1 and got.count(1) == 1
    assert got.index(-1) < got.index(1)
    # The bearish change is the bar where y first falls.
    i = got.index(-1)
    assert ys[i] < ys[i - 1] and ys[i - 1] > ys[i - 2]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1.0, 1e6), min_size=27, max_size=27))
def test_kernel_matches_reference(closes: list[float]) -> None:
    w = rq_weights(8.0, 8.0, 27)
    got = nw_estimate(np.array(closes), w)
    assert got == pytest.approx(ref_y(closes, 26), rel=1e-12)


def test_columns_clip_and_nonpositive_close() -> None:
    state = NwrqkState(NwrqkConfig(x0=0))  # window 2: y is a weighted mean of two closes
    state.update(100.0)
    out = state.update(1000.0)  # y far below C: clipped at -5 % -> -1
    assert out.value_col == -1.0
    state2 = NwrqkState(NwrqkConfig(x0=0))
    state2.update(100.0)
    assert math.isnan(state2.update(-1.0).value_col)


def test_config_errors() -> None:
    with pytest.raises(ConfigError) as err:
        NwrqkConfig(h=0.0)
    assert err.value.key == "strategic.nwrqk.h"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1.0, 1e4), min_size=1, max_size=60), st.integers(0, 6))
def test_ring_state_equals_kernel_on_each_window(closes: list[float], x0: int) -> None:
    cfg = NwrqkConfig(x0=x0)
    state = NwrqkState(cfg)
    w = rq_weights(cfg.h, cfg.r, cfg.window)
    ys: list[float] = []
    for t, c in enumerate(closes):
        out = state.update(c)
        if t < cfg.window - 1:
            assert math.isnan(out.y) and out.change == 0
            continue
        y = nw_estimate(np.array(closes[t + 1 - cfg.window:t + 1]), w)
        ys.append(y)
        assert out.y == y  # bit for bit
        if len(ys) >= 2:
            assert out.slope_pct == 100.0 * (y - ys[-2]) / ys[-2]
        if len(ys) >= 3:
            y2, y1 = ys[-3], ys[-2]
            assert out.change == (1 if y1 < y and y2 > y1 else -1 if y1 > y and y2 < y1 else 0)
