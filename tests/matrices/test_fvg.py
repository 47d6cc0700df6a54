"""FVG tracker: spec features.md 2.1-2.2 and the 2.5 test vectors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.configbase import ConfigError
from himari.daemon.matrices.fvg import FvgConfig, FvgOutput, FvgTracker

B0 = (100.0, 101.0, 99.0, 100.5)
B1 = (100.5, 104.0, 100.4, 103.8)
B2 = (103.8, 105.0, 101.5, 104.5)


def run(bars, cfg: FvgConfig | None = None) -> tuple[FvgTracker, list[FvgOutput]]:
    tr = FvgTracker(cfg)
    return tr, [tr.update(*b) for b in bars]


def mirror(bar: tuple[float, float, float, float], axis: float = 400.0):
    o, h, l, c = bar
    return (axis - o, axis - l, axis - h, axis - c)


def test_spec_vector_creation():
    _, outs = run([B0, B1, B2])
    assert not outs[0].bull_active and not outs[1].bull_active
    o = outs[2]
    assert o.t == 2 and o.new_gap == 1
    assert o.bull_active and not o.bear_active
    assert o.nearest_level == 101.5 and o.nearest_age == 0 and o.nearest_side == 1
    assert not o.mitigated


def test_spec_vector_mitigated():
    tr, outs = run([B0, B1, B2, (104.5, 104.8, 101.3, 102.0)])
    o = outs[3]
    assert not o.bull_active and not o.bear_active
    assert math.isnan(o.nearest_level) and o.nearest_age == -1
    assert o.mitigated and o.bull_mitigated and not o.bear_mitigated
    assert o.bull_mitigated_size == pytest.approx(0.5)
    assert o.bull_mitigated_level == 101.5
    assert o.bear_mitigated_size == 0.0 and o.bear_mitigated_level == 0.0
    assert tr.mitigated == 1 and tr.invalidated == 0


def test_spec_vector_invalidated():
    tr, outs = run([B0, B1, B2, (104.5, 104.8, 100.5, 100.9)])
    o = outs[3]
    assert not o.bull_active and not o.mitigated and not o.bull_mitigated
    assert tr.invalidated == 1 and tr.mitigated == 0


def test_bearish_mirror_of_spec_vector():
    tr, outs = run([mirror(B0), mirror(B1), mirror(B2), mirror((104.5, 104.8, 101.3, 102.0))])
    assert outs[2].bear_active and not outs[2].bull_active and outs[2].new_gap == -1
    assert outs[2].nearest_level == pytest.approx(400 - 101.5)  # level = lower edge b
    o = outs[3]
    assert o.bear_mitigated and not o.bull_mitigated
    assert o.bear_mitigated_size == pytest.approx(0.5)
    assert o.bear_mitigated_level == pytest.approx(400 - 101.5)


def test_gap_is_not_tested_on_its_own_bar():
    # At creation L_2 == u (101.5): a same-bar test would mitigate it; it must stay active.
    _, outs = run([B0, B1, B2, (104.5, 106.0, 101.6, 105.0)])
    assert outs[2].bull_active and outs[3].bull_active and not outs[3].mitigated
    assert outs[3].nearest_age == 1


def test_body_average_includes_middle_bar_and_is_strict():
    # B1 = 3.3, Bavg = mean(0.5, 3.3) = 1.9; with multiplier 3.3/1.9 the comparison is equality.
    _, outs = run([B0, B1, B2], FvgConfig(body_multiplier=3.3 / 1.9 + 1e-9))
    assert not outs[2].bull_active
    _, outs = run([B0, B1, B2], FvgConfig(body_multiplier=3.3 / 1.9 - 1e-9))
    assert outs[2].bull_active


def test_price_condition_is_strict():
    b2 = (103.8, 105.0, 101.0, 104.5)  # L_2 == H_0
    _, outs = run([B0, B1, b2])
    assert not outs[2].bull_active


def test_body_lookback_window():
    # 25 bars of body 0.1, then the spec pattern. With lookback 2 the average is mean(B_{t-2}, B_{t-1}).
    flat = [(100.0, 100.5, 99.5, 100.1)] * 25
    pattern = [(100.0, 101.0, 99.0, 100.5), (100.5, 104.0, 100.4, 103.8), (103.8, 105.0, 101.5, 104.5)]
    # lookback 20: Bavg = (18*0.1 + 0.5 + 3.3)/20 = 0.28 -> gap; lookback 1: Bavg = 3.3 -> no gap.
    _, outs = run(flat + pattern)
    assert outs[-1].new_gap == 1
    _, outs = run(flat + pattern, FvgConfig(lookback=1))
    assert outs[-1].new_gap == 0


def staircase(n: int) -> list[tuple[float, float, float, float]]:
    """Rising bars: every bar from t = 2 opens a bull gap [10t + 86, 10t + 99] never revisited."""
    return [(100.0 + 10 * k, 106.0 + 10 * k, 99.0 + 10 * k, 105.0 + 10 * k) for k in range(n)]


def test_staircase_gaps_accumulate():
    tr, outs = run(staircase(8), FvgConfig(body_multiplier=0.5))
    assert [o.n_bull for o in outs] == [0, 0, 1, 2, 3, 4, 5, 6]
    # nearest = the newest (highest) gap level 10t + 99, age 0
    assert outs[-1].nearest_level == 10 * 7 + 99 and outs[-1].nearest_age == 0
    assert tr.active()[0][0] == (106.0, 119.0, 2)


def test_expiry_after_max_age():
    tr, outs = run(staircase(8), FvgConfig(body_multiplier=0.5, max_age=3))
    # a gap made at i lives while t - i < 3: at most 3 gaps active, no signal on expiry
    assert [o.n_bull for o in outs] == [0, 0, 1, 2, 3, 3, 3, 3]
    assert all(not o.mitigated for o in outs)
    assert tr.expired == 3
    assert [g[2] for g in tr.active()[0]] == [5, 6, 7]


def test_max_gaps_per_side_drops_oldest():
    tr, outs = run(staircase(8), FvgConfig(body_multiplier=0.5, max_gaps_per_side=2))
    assert max(o.n_bull for o in outs) == 2
    assert [g[2] for g in tr.active()[0]] == [6, 7]
    assert tr.dropped == 4 and tr.created == 6


def test_mitigation_invalidation_per_gap():
    bars = staircase(6)  # gaps [106,119]@2, [116,129]@3, [126,139]@4, [136,149]@5
    tr, outs = run(bars + [(150.0, 150.0, 120.0, 125.0)], FvgConfig(body_multiplier=0.5))
    o = outs[-1]
    assert tr.invalidated == 2  # b = 126, 136 > C = 125
    # @2: u = 119 < L = 120, untouched; @3: u = 129 >= L, mitigated
    assert o.bull_mitigated and o.bull_mitigated_level == 129.0 and o.bull_mitigated_size == 13.0
    assert tr.active()[0] == [(106.0, 119.0, 2)]


def test_largest_mitigated_gap_reported():
    # P = 100, 110, 125, 145, 170; bar (P, P+6, P-1, P+5): gaps [P_{t-2}+6, P_t-1] of size 18, 28, 38
    bars = [(p, p + 6.0, p - 1.0, p + 5.0) for p in (100.0, 110.0, 125.0, 145.0, 170.0)]
    tr, _ = run(bars, FvgConfig(body_multiplier=0.5))
    assert [g[1] - g[0] for g in tr.active()[0]] == [18.0, 28.0, 38.0]
    o = tr.update(175.0, 175.0, 120.0, 140.0)  # L reaches every u, C above every b
    assert tr.active()[0] == []
    assert tr.mitigated == 3
    assert o.bull_mitigated_size == 38.0 and o.bull_mitigated_level == 169.0


def test_nearest_tie_goes_to_newest_bearish():
    bars = [(100, 101, 97, 98), (98, 98, 96, 97), (97, 100, 96, 99), (99, 103, 99, 103),
            (103, 107, 102, 107), (107, 108, 104, 104), (104, 104, 101, 102), (102, 103, 100, 101)]
    tr, outs = run([tuple(map(float, b)) for b in bars], FvgConfig(body_multiplier=0.5))
    assert tr.active() == ([(98.0, 99.0, 3)], [(103.0, 104.0, 7)])  # levels 99 and 103, C = 101
    assert outs[-1].nearest_side == -1 and outs[-1].nearest_level == 103.0
    assert outs[-1].nearest_age == 0


def test_nearest_tie_goes_to_newest_bullish():
    bars = [(100, 101, 96, 97), (97, 97, 93, 93), (93, 94, 88, 89), (89, 90, 85, 85),
            (85, 90, 85, 89), (89, 89, 88, 88), (88, 91, 87, 90), (90, 92, 90, 92)]
    tr, outs = run([tuple(map(float, b)) for b in bars], FvgConfig(body_multiplier=0.5))
    assert tr.active() == ([(89.0, 90.0, 7)], [(94.0, 96.0, 2)])  # levels 90 and 94, C = 92
    assert outs[-1].nearest_side == 1 and outs[-1].nearest_level == 90.0


def test_config_validation():
    with pytest.raises(ConfigError) as e:
        FvgConfig(lookback=0)
    assert e.value.key == "fvg.lookback"
    with pytest.raises(ConfigError):
        FvgConfig(body_multiplier=0.0)
    with pytest.raises(ConfigError):
        FvgConfig(max_gaps_per_side=0)


# ---- property test against a from-scratch reference of the spec text


def reference(bars, cfg: FvgConfig):
    gaps: list[dict] = []  # {side, b, u, i}
    outs = []
    for t, (o, h, l, c) in enumerate(bars):
        bull_sizes, bear_sizes, keep = [], [], []
        for g in gaps:
            if g["side"] == 1:
                if c < g["b"]:
                    continue
                if l <= g["u"]:
                    bull_sizes.append((g["u"] - g["b"], g["i"], g["u"]))
                    continue
            else:
                if c > g["u"]:
                    continue
                if h >= g["b"]:
                    bear_sizes.append((g["u"] - g["b"], g["i"], g["b"]))
                    continue
            keep.append(g)
        gaps = [g for g in keep if t - g["i"] < cfg.max_age]
        if t >= 2:
            bodies = [abs(bars[j][3] - bars[j][0]) for j in range(max(0, t - cfg.lookback), t)]
            bavg = sum(bodies) / len(bodies)
            if abs(bars[t - 1][3] - bars[t - 1][0]) > cfg.body_multiplier * bavg:
                if l > bars[t - 2][1]:
                    gaps.append({"side": 1, "b": bars[t - 2][1], "u": l, "i": t})
                elif h < bars[t - 2][2]:
                    gaps.append({"side": -1, "b": h, "u": bars[t - 2][2], "i": t})
            for side in (1, -1):
                mine = [g for g in gaps if g["side"] == side]
                if len(mine) > cfg.max_gaps_per_side:
                    oldest = min(mine, key=lambda g: g["i"])
                    gaps.remove(oldest)
        lvl = lambda g: g["u"] if g["side"] == 1 else g["b"]  # noqa: E731
        best = min(gaps, key=lambda g: (abs(lvl(g) - c), -g["i"], -g["side"]), default=None)
        bm = max(bull_sizes, default=(0.0, 0, 0.0))
        em = max(bear_sizes, default=(0.0, 0, 0.0))
        outs.append((any(g["side"] == 1 for g in gaps), any(g["side"] == -1 for g in gaps),
                     lvl(best) if best else None, t - best["i"] if best else -1,
                     bool(bull_sizes or bear_sizes), bool(bull_sizes), bool(bear_sizes),
                     bm[0], bm[2], em[0], em[2]))
    return outs


@st.composite
def bar_series(draw):
    n = draw(st.integers(3, 60))
    p, out = 100, []
    for _ in range(n):
        o = p
        c = max(10, o + draw(st.integers(-6, 6)))
        h = max(o, c) + draw(st.integers(0, 2))
        l = max(1, min(o, c) - draw(st.integers(0, 2)))
        out.append((float(o), float(h), float(l), float(c)))
        p = c
    return out


@settings(max_examples=120, deadline=None)
@given(bar_series(), st.sampled_from([0.5, 1.0, 1.5]), st.integers(1, 4), st.integers(2, 8),
       st.integers(1, 20))
def test_matches_reference(bars, mult, cap, max_age, lookback):
    cfg = FvgConfig(body_multiplier=mult, max_gaps_per_side=cap, max_age=max_age, lookback=lookback)
    _, outs = run(bars, cfg)
    ref = reference(bars, cfg)
    for o, r in zip(outs, ref, strict=True):
        got = (o.bull_active, o.bear_active, None if o.nearest_side == 0 else o.nearest_level,
               o.nearest_age, o.mitigated, o.bull_mitigated, o.bear_mitigated,
               o.bull_mitigated_size, o.bull_mitigated_level, o.bear_mitigated_size,
               o.bear_mitigated_level)
        assert got == r


def random_walk(n: int, seed: int, step: float, wick: float) -> list[tuple[float, float, float, float]]:
    """Bars on a 0.25 grid (exact in binary, so the reference's plain sum equals the tracker's fsum)."""
    import random

    rnd = random.Random(seed)
    q = lambda x: round(x * 4) / 4  # noqa: E731
    p, out = 1000.0, []
    for _ in range(n):
        o = p
        c = max(5.0, q(o + rnd.gauss(0.0, step)))
        h = q(max(o, c) + rnd.uniform(0.0, wick))
        l = max(0.25, q(min(o, c) - rnd.uniform(0.0, wick)))
        out.append((o, h, l, c))
        p = c
    return out


@pytest.mark.parametrize("cfg", [FvgConfig(), FvgConfig(body_multiplier=0.7, max_gaps_per_side=3,
                                                        max_age=12, lookback=4)])
def test_long_random_walk_matches_reference_exactly(cfg):
    bars = random_walk(3000, seed=11, step=3.0, wick=1.5)
    tr, outs = run(bars, cfg)
    ref = reference(bars, cfg)
    for t, (o, r) in enumerate(zip(outs, ref, strict=True)):
        got = (o.bull_active, o.bear_active, None if o.nearest_side == 0 else o.nearest_level,
               o.nearest_age, o.mitigated, o.bull_mitigated, o.bear_mitigated,
               o.bull_mitigated_size, o.bull_mitigated_level, o.bear_mitigated_size,
               o.bear_mitigated_level)
        assert got == r, t
        assert o.t == t and (o.n_bull > 0) == o.bull_active and (o.n_bear > 0) == o.bear_active
        assert max(o.n_bull, o.n_bear) <= cfg.max_gaps_per_side
    # the walk exercises every path: both sides made and mitigated, invalidation, expiry
    assert sum(o.bull_mitigated for o in outs) > 20 and sum(o.bear_mitigated for o in outs) > 20
    assert tr.invalidated > 10 and tr.expired > 0
    assert tr.created == tr.mitigated + tr.invalidated + tr.expired + tr.dropped + \
        sum(map(len, tr.active()))
    if cfg.max_gaps_per_side == 3:
        assert tr.dropped > 0
