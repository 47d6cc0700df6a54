"""Tactical 60x7 assembler: spec features.md 2.3-2.5 vectors, readiness, ring buffer, data quality."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.configbase import ConfigError
from himari.daemon.events import Bar
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.matrices import tactical as tac
from himari.daemon.matrices.tactical import (TacticalAssembler, TacticalConfig, momentum_column,
                                             volume_column)

INST = Instrument(id="TEST", tick_size=Decimal("0.1"))
STEP = 300 * 10**9


def bar(t: int, o: float, h: float, l: float, c: float, v: int = 100) -> Bar:
    tk = lambda x: int(round(x * 10))  # noqa: E731  tick 0.1
    return Bar(event_id=f"B-{t}", ts_ns=(t + 1) * STEP, instrument_id="TEST", spec="5m",
               ts_open=t * STEP, ts_close=(t + 1) * STEP, open=tk(o), high=tk(h), low=tk(l),
               close=tk(c), volume=v, n_ticks=1)


def assembler(**kw) -> TacticalAssembler:
    return TacticalAssembler(TacticalConfig(**kw), INST, IdSource())


FVG_BARS = [(100, 101, 99, 100.5), (100.5, 104, 100.4, 103.8), (103.8, 105, 101.5, 104.5)]


def feed(a: TacticalAssembler, ohlc, start: int = 0, v: int = 100):
    return [a.on_bar(bar(start + i, *x, v=v)) for i, x in enumerate(ohlc)]


def test_fvg_vector_rows_mitigated():
    a = assembler()
    ms = feed(a, FVG_BARS + [(104.5, 104.8, 101.3, 102.0)])
    np.testing.assert_array_equal(ms[2].values[-1, :5], [1, 0, -1, 1, 0])
    np.testing.assert_array_equal(ms[3].values[-1, :5], [0, 0, 0, 0, 1])
    # row t=2 is still the same, one row up, in the later matrix
    np.testing.assert_array_equal(ms[3].values[-2], ms[2].values[-1])
    ctx = ms[3].context
    assert ctx["fvg_bull_mitigated"] == 1.0 and ctx["fvg_bear_mitigated"] == 0.0
    assert ctx["fvg_bull_mitigated_size"] == pytest.approx(0.5)
    assert ctx["fvg_bull_mitigated_level"] == pytest.approx(101.5)
    assert ctx["fvg_bear_mitigated_size"] == 0.0 and ctx["fvg_bear_mitigated_level"] == 0.0


def test_fvg_vector_rows_invalidated():
    ms = feed(assembler(), FVG_BARS + [(104.5, 104.8, 100.5, 100.9)])
    np.testing.assert_array_equal(ms[3].values[-1, :5], [0, 0, 0, 0, 0])
    assert ms[3].context["fvg_bull_mitigated"] == 0.0


def test_nearest_level_and_age_normalization():
    a = assembler()
    # gap [101, 101.5] stays active while L > 101.5 and C >= 101
    ms = feed(a, FVG_BARS + [(104.5, 104.6, 101.6, 102.0), (102.0, 102.4, 101.7, 102.2)])
    row = ms[4].values[-1]
    assert row[0] == 1
    assert row[2] == np.float32(100 * (101.5 - 102.2) / 102.2 / 2)
    assert row[3] == np.float32(math.exp(-2 / 10))


def test_momentum_vector():
    for last, want in ((105.0, 0.761594), (112.0, 0.964028)):
        a = assembler()
        ms = feed(a, [(100, 100, 100, 100)] * 5 + [(100, last, 100, last)])
        assert ms[4].values[-1, 5] == 0.0  # t = 4 < 5
        assert ms[5].values[-1, 5] == pytest.approx(want, abs=1e-6)
    assert momentum_column(105.0, 100.0, 10.0, 5.0) == pytest.approx(math.tanh(1.0))
    assert momentum_column(80.0, 100.0, 10.0, 5.0) == pytest.approx(-0.964028, abs=1e-6)


def test_volume_vector():
    a = assembler()
    flat = [(100, 100, 100, 100)]
    for t in range(20):
        a.on_bar(bar(t, *flat[0], v=100))
    m = a.on_bar(bar(20, *flat[0], v=300))
    assert m.context["volume_ratio"] == pytest.approx(300 / 119.047619, rel=1e-8)
    assert m.context["volume_ratio"] == pytest.approx(2.52)
    assert m.values[-1, 6] == pytest.approx(0.727906, abs=1e-6)
    assert volume_column(2.0) == pytest.approx(0.6)
    assert volume_column(3.0) == pytest.approx(0.8)
    assert volume_column(0.5) == 0.0 and volume_column(1.0) == 0.0
    assert volume_column(2.0) == pytest.approx(math.tanh(math.log(1 + 1.0)))


def test_volume_column_zero_before_valid_and_ema_seed():
    a = assembler()
    ms = [a.on_bar(bar(t, 100, 100, 100, 100, v=100 if t != 5 else 1000)) for t in range(20)]
    assert ms[5].values[-1, 6] == 0.0  # t = 5 < 19
    assert ms[5].context["volume_ratio"] > 1.0
    assert ms[0].context["volume_ratio"] == 1.0  # EMA_0 = V_0


def test_volume_ratio_bound_after_zero_volume():
    a = assembler()
    ms = [a.on_bar(bar(t, 100, 100, 100, 100, v=0 if t < 25 else 50)) for t in range(27)]
    assert ms[25].context["volume_ratio"] == pytest.approx(10.5)  # EMA = a V: rho = 1/a
    assert ms[25].values[-1, 6] == pytest.approx(volume_column(10.5), abs=1e-7)
    assert ms[26].context["volume_ratio"] < 10.5


def test_zero_volume_gives_neutral_ratio():
    ms = feed(assembler(), [(100, 100, 100, 100)] * 3, v=0)
    assert all(m.context["volume_ratio"] == 1.0 for m in ms)


def test_readiness_at_bar_78():
    a = assembler()
    ms = [a.on_bar(bar(t, 100 + t % 3, 101 + t % 3, 99 + t % 3, 100.5 + t % 3)) for t in range(80)]
    assert a.ready_from == 78
    assert not ms[77].ready and ms[78].ready and ms[79].ready


def test_matrix_event_fields_and_ring_buffer_point_in_time():
    a = assembler()
    rng = np.random.default_rng(7)
    closes = 100 + np.cumsum(rng.normal(0, 0.5, 150))
    ms = []
    for t, c in enumerate(closes):
        o = closes[t - 1] if t else c
        ms.append(a.on_bar(bar(t, o, max(o, c) + 0.3, min(o, c) - 0.3, c, v=int(rng.integers(1, 500)))))
    m = ms[100]
    assert m.kind == "tactical" and m.bar_id == "B-100" and m.ts_ns == 101 * STEP
    assert m.event_id == "TM-R-101" and m.instrument_id == "TEST"
    assert m.values.dtype == np.float32 and m.values.shape == (60, 7)
    assert not m.values.flags.writeable
    # the row of bar k is identical in every matrix that holds it
    for k in range(60, 150):
        for later in (k + 1, k + 30, k + 59):
            if later < 150:
                np.testing.assert_array_equal(ms[later].values[59 - (later - k)], ms[k].values[59])
    # before 60 bars the older rows are zero
    assert not ms[10].values[:49].any()
    np.testing.assert_array_equal(ms[10].values[49], ms[0].values[59])


def test_context_keys_and_atr():
    a = assembler()
    rng = np.random.default_rng(3)
    rows = []
    c = 100.0
    for t in range(40):
        o = c
        c = round(o + rng.normal(0, 1), 1)
        h, l = round(max(o, c) + rng.uniform(0, 1), 1), round(min(o, c) - rng.uniform(0, 1), 1)
        rows.append((o, h, l, c))
    ms = feed(a, rows)
    keys = {"close", "bar_index", "volume_ratio", "atr14", "fvg_bull_mitigated",
            "fvg_bear_mitigated", "fvg_bull_mitigated_size", "fvg_bull_mitigated_level",
            "fvg_bear_mitigated_size", "fvg_bear_mitigated_level"}
    assert keys <= set(ms[0].context)
    assert ms[5].context["bar_index"] == 5.0 and ms[5].context["close"] == pytest.approx(rows[5][3])
    # reference Wilder ATR(14)
    trs = [rows[0][1] - rows[0][2]] + [max(h - l, abs(h - rows[i - 1][3]), abs(l - rows[i - 1][3]))
                                       for i, (_, h, l, _) in enumerate(rows) if i > 0]
    atr = [0.0] * 13 + [sum(trs[:14]) / 14]
    for tr in trs[14:]:
        atr.append((atr[-1] * 13 + tr) / 14)
    for t in range(40):
        assert ms[t].context["atr14"] == pytest.approx(atr[t], rel=1e-9, abs=1e-12)


def test_nonfinite_replaced_and_counted(monkeypatch):
    a = assembler()
    monkeypatch.setattr(tac, "momentum_column", lambda *args: float("nan"))
    ms = feed(a, [(100, 100, 100, 100)] * 7)
    assert np.isfinite(ms[-1].values).all()
    assert ms[-1].values[-1, 5] == 0.0
    assert a.nonfinite_counts[5] == 2 and a.nonfinite_counts.sum() == 2  # t = 5, 6


def test_config_validation():
    with pytest.raises(ConfigError) as e:
        TacticalConfig(momentum_n=0)
    assert e.value.key == "tactical.momentum_n"
    with pytest.raises(ConfigError):
        TacticalConfig(momentum_scale=0.0)
    assert TacticalConfig().fvg.lookback == 20


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-30, 30), st.integers(0, 20), st.integers(0, 20),
                          st.integers(0, 10**6)), min_size=1, max_size=120))
def test_values_finite_and_in_range(steps):
    a = assembler()
    c = 1000
    for t, (d, up, dn, v) in enumerate(steps):
        o, c = c, max(50, c + d)
        hi, lo = max(o, c) + up, max(1, min(o, c) - dn)
        m = a.on_bar(Bar(event_id=f"B{t}", ts_ns=(t + 1) * STEP, instrument_id="TEST", spec="5m",
                         ts_open=t * STEP, ts_close=(t + 1) * STEP, open=o, high=hi, low=lo,
                         close=c, volume=v, n_ticks=1))
        vals = m.values
        assert np.isfinite(vals).all()
        assert ((vals[:, [0, 1, 4]] == 0) | (vals[:, [0, 1, 4]] == 1)).all()
        assert (np.abs(vals[:, [2, 3, 5]]) <= 1).all() and (vals[:, 3] >= 0).all()
        # rho <= 1/a = 10.5 (equality only right after zero-volume bars)
        assert ((vals[:, 6] >= 0) & (vals[:, 6] <= np.float32(volume_column(10.5)))).all()
        assert all(math.isfinite(x) for x in m.context.values())


# ---- the optimized assembler against a straightforward reference, exactly


class ReferenceTactical:
    """Spec features.md 2.1-2.3 read literally: full history lists, a per-bar float64 numpy row with
    mask / non-finite / clip steps, the matrix rebuilt from the row history (zeros before bar 0)."""

    def __init__(self, cfg: TacticalConfig, tick: float) -> None:
        self.cfg, self.tick = cfg, tick
        self.o, self.h, self.l, self.c, self.v = [], [], [], [], []
        self.gaps: list[dict] = []
        self.ema: list[float] = []
        self.atr: list[float] = []
        self.trs: list[float] = []
        self.rows: list[np.ndarray] = []
        self.valid_from = np.array([2, 2, 2, 2, 3, cfg.momentum_n, cfg.volume_ema - 1])

    def fvg(self, t: int) -> tuple:
        f, o, h, l, c = self.cfg.fvg, self.o, self.h, self.l, self.c
        mit = {1: [], -1: []}
        keep = []
        for g in self.gaps:
            if (c[t] < g["b"]) if g["side"] == 1 else (c[t] > g["u"]):
                continue  # invalidated
            if (l[t] <= g["u"]) if g["side"] == 1 else (h[t] >= g["b"]):
                mit[g["side"]].append((g["u"] - g["b"], g["i"], g["u"] if g["side"] == 1 else g["b"]))
                continue
            keep.append(g)
        self.gaps = [g for g in keep if t - g["i"] < f.max_age]
        if t >= 2:
            bodies = [abs(c[j] - o[j]) for j in range(max(0, t - f.lookback), t)]
            if abs(c[t - 1] - o[t - 1]) > f.body_multiplier * (math.fsum(bodies) / len(bodies)):
                if l[t] > h[t - 2]:
                    self.gaps.append({"side": 1, "b": h[t - 2], "u": l[t], "i": t})
                elif h[t] < l[t - 2]:
                    self.gaps.append({"side": -1, "b": h[t], "u": l[t - 2], "i": t})
            for side in (1, -1):
                mine = [g for g in self.gaps if g["side"] == side]
                if len(mine) > f.max_gaps_per_side:
                    self.gaps.remove(mine[0])
        lvl = lambda g: g["u"] if g["side"] == 1 else g["b"]  # noqa: E731
        best = min(self.gaps, key=lambda g: (abs(lvl(g) - c[t]), -g["i"], -g["side"]), default=None)
        bull = max(mit[1], default=(0.0, 0, 0.0))
        bear = max(mit[-1], default=(0.0, 0, 0.0))
        return (any(g["side"] == 1 for g in self.gaps), any(g["side"] == -1 for g in self.gaps),
                best, bool(mit[1]), bool(mit[-1]), bull, bear)

    def on_bar(self, b: Bar) -> tuple[np.ndarray, dict[str, float], bool]:
        cfg, k = self.cfg, self.tick
        for lst, x in ((self.o, b.open), (self.h, b.high), (self.l, b.low), (self.c, b.close)):
            lst.append(x * k)
        self.v.append(float(b.volume))
        t = len(self.c) - 1
        c, v = self.c[t], self.v[t]
        a = 2.0 / (cfg.volume_ema + 1.0)
        self.ema.append(v if t == 0 else a * v + (1.0 - a) * self.ema[-1])
        rho = v / self.ema[t] if self.ema[t] > 0.0 else 1.0
        rho = rho if math.isfinite(rho) else 1.0
        h, l = self.h[t], self.l[t]
        self.trs.append(h - l if t == 0 else max(h - l, abs(h - self.c[t - 1]), abs(l - self.c[t - 1])))
        if t < 13:
            self.atr.append(0.0)
        elif t == 13:
            self.atr.append(math.fsum(self.trs) / 14)
        else:
            self.atr.append((self.atr[-1] * 13 + self.trs[t]) / 14)
        bull_on, bear_on, best, bull_mit, bear_mit, bull, bear = self.fvg(t)

        row = np.zeros(7)
        row[0], row[1], row[4] = float(bull_on), float(bear_on), float(bull_mit or bear_mit)
        if best is not None and c > 0.0:
            p = cfg.fvg.level_clip_pct
            level = best["u"] if best["side"] == 1 else best["b"]
            row[2] = min(p, max(-p, 100.0 * (level - c) / c)) / p
            row[3] = math.exp(-(t - best["i"]) / cfg.fvg.age_decay)
        n = cfg.momentum_n
        if t >= n and self.c[t - n] > 0.0:
            m = 100.0 * (c - self.c[t - n]) / self.c[t - n]
            row[5] = math.tanh(min(cfg.momentum_clip, max(-cfg.momentum_clip, m)) / cfg.momentum_scale)
        row[6] = (rho * rho - 1.0) / (rho * rho + 1.0) if rho > 1.0 else 0.0
        row[t < self.valid_from] = 0.0
        row[~np.isfinite(row)] = 0.0
        self.rows.append(np.clip(row, tac._LO, tac._HI))

        values = np.zeros((cfg.rows, 7), dtype=np.float32)
        recent = self.rows[-cfg.rows:]
        values[cfg.rows - len(recent):] = np.array(recent, dtype=np.float32)
        ctx = {"close": c, "bar_index": float(t), "volume_ratio": rho, "atr14": self.atr[t],
               "fvg_mitigated": float(bull_mit or bear_mit), "fvg_bull_mitigated": float(bull_mit),
               "fvg_bear_mitigated": float(bear_mit), "fvg_bull_mitigated_size": bull[0],
               "fvg_bull_mitigated_level": bull[2], "fvg_bear_mitigated_size": bear[0],
               "fvg_bear_mitigated_level": bear[2]}
        ready = t >= int(self.valid_from.max()) + cfg.rows - 1
        return values, ctx, ready


def random_bars(n: int, seed: int) -> list[Bar]:
    """Random walk in 0.1 ticks with big moves (many gaps), volume spikes and zero-volume stretches."""
    rng = np.random.default_rng(seed)
    out, c = [], 10_000
    for t in range(n):
        o = c
        c = max(50, o + int(rng.normal(0, 30)))
        hi, lo = max(o, c) + int(rng.integers(0, 15)), max(1, min(o, c) - int(rng.integers(0, 15)))
        v = 0 if (t // 50) % 7 == 3 else int(rng.integers(1, 400)) * (10 if t % 37 == 0 else 1)
        out.append(Bar(event_id=f"B{t}", ts_ns=(t + 1) * STEP, instrument_id="TEST", spec="5m",
                       ts_open=t * STEP, ts_close=(t + 1) * STEP, open=o, high=hi, low=lo, close=c,
                       volume=v, n_ticks=1))
    return out


@pytest.mark.parametrize("cfg", [
    TacticalConfig(),
    TacticalConfig(rows=7, momentum_n=3, volume_ema=4, momentum_clip=0.5,
                   fvg=tac.FvgConfig(body_multiplier=0.8, max_gaps_per_side=2, max_age=9, lookback=3)),
    TacticalConfig(rows=1, momentum_n=1, volume_ema=1),
])
def test_matches_straightforward_reference_exactly(cfg):
    a, ref = TacticalAssembler(cfg, INST, IdSource()), ReferenceTactical(cfg, 0.1)
    bars = random_bars(3000, seed=5)
    mitigated = 0
    for t, b in enumerate(bars):
        m = a.on_bar(b)
        values, ctx, ready = ref.on_bar(b)
        assert m.values.tobytes() == values.tobytes(), t  # bit for bit, float32
        assert m.values.shape == values.shape and not m.values.flags.writeable
        assert m.context == ctx and m.ready == ready, t
        assert m.bar_id == b.event_id and m.event_id == f"TM-R-{t + 1}"
        mitigated += ctx["fvg_mitigated"] > 0
    assert mitigated > 100 and a.nonfinite_counts.sum() == 0
    np.testing.assert_array_equal(a.snapshot(), values)
