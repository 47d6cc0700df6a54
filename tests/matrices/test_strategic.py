"""Strategic 48 x 13 assembler (spec features.md 1.5, 3, 5): 30-minute aggregation and its boundaries,
readiness at bar 335, point-in-time rows, wiring against the indicator modules, data quality on
adversarial input, the row kernel against the plain numpy steps, and a run over recorded BTC bars."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.configbase import ConfigError
from himari.daemon.events import Bar, FeatureMatrix
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.matrices.fvg import FvgTracker
from himari.daemon.matrices.lvn import ProfileConfig, VolumeProfileState
from himari.daemon.matrices.mlmi import MlmiConfig, MlmiState
from himari.daemon.matrices.mmd import MmdConfig, MmdState
from himari.daemon.matrices.nwrqk import NwrqkConfig, NwrqkState
from himari.daemon.matrices.strategic import (_HI, _LO, CONTEXT_KEYS, N_COLS, NEUTRAL, PERIOD_NS,
                                               MomentumConfig, StrategicAssembler, StrategicConfig,
                                               finish_row, momentum_column, warmup)
from himari.daemon.matrices.volatility import VolatilityState, VolConfig, VolOutput

warmup()

P5 = 300_000_000_000
M0 = 1_000_000  # first 30-minute interval used by the tests
TICK = Decimal("0.5")
INST = Instrument(id="BTC", tick_size=TICK)
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def bar5(slot: int, o: int, h: int, l: int, c: int, v: int = 10, *, span: int = 1,
         inst: str = "BTC") -> Bar:
    """A bar of `span` 5-minute slots starting at slot `slot` counted from interval M0's start."""
    ts_open = M0 * PERIOD_NS + slot * P5
    return Bar(event_id=f"b{slot}", ts_ns=ts_open + span * P5, instrument_id=inst, spec="5m",
               ts_open=ts_open, ts_close=ts_open + span * P5, open=o, high=h, low=l, close=c,
               volume=v, n_ticks=2)


def flat(slot: int, px: int = 1000, v: int = 10) -> Bar:
    return bar5(slot, px, px, px, px, v)


def walk(n_slots: int, seed: int, vol_ticks: float = 10.0, shock_from: int | None = None) -> list[Bar]:
    rng = np.random.default_rng(seed)
    px = 20_000
    bars = []
    for s in range(n_slots):
        sd = vol_ticks * (6 if shock_from is not None and s >= shock_from else 1)
        o = px
        c = max(100, px + int(round(rng.normal(0, sd))))
        h = max(o, c) + int(rng.integers(0, 5))
        l = min(o, c) - int(rng.integers(0, 5))
        bars.append(bar5(s, o, h, l, c, int(rng.integers(0, 1000))))
        px = c
    return bars


def assembler(cfg: StrategicConfig | None = None) -> StrategicAssembler:
    return StrategicAssembler(cfg or StrategicConfig(), INST, IdSource())


def test_config_defaults_and_readiness_bar() -> None:
    cfg = StrategicConfig()
    assert cfg.rows == 48 and cfg.mlmi.k == 200 and cfg.mlmi.store_max == 10_000
    assert (cfg.nwrqk.h, cfg.nwrqk.r, cfg.nwrqk.x0) == (8.0, 8.0, 25)
    assert (cfg.profile.window, cfg.profile.bins, cfg.profile.lvn_max_frac_of_poc) == (48, 24, 0.7)
    assert (cfg.momentum.n_short, cfg.momentum.n_long) == (20, 50)
    assert (cfg.mmd.test, cfg.mmd.reference, cfg.vol.short, cfg.vol.long) == (48, 240, 30, 240)
    assert cfg.valid_from().tolist() == [39, 59, 26, 27, 47, 47, 2, 2, 20, 50, 288, 240, 47]
    assert cfg.ready_from == 335
    with pytest.raises(ConfigError) as err:
        StrategicConfig(rows=0)
    assert err.value.key == "strategic.rows"
    with pytest.raises(ConfigError) as err:
        MomentumConfig(scale_long_pct=0.0)
    assert err.value.key == "strategic.momentum.scale_long_pct"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"mlmi": {"k": 3, "bogus": 1}}, StrategicConfig)
    assert msgspec.convert({"nwrqk": {"x0": 5}}, StrategicConfig).nwrqk.window == 7


def test_six_bars_make_one_30m_bar() -> None:
    a = assembler()
    bars = [bar5(0, 100, 105, 98, 104, 5), bar5(1, 104, 110, 103, 109, 7),
            bar5(2, 109, 109, 90, 91, 11), bar5(3, 91, 95, 91, 94, 0),
            bar5(4, 94, 99, 93, 97, 3), bar5(5, 97, 98, 96, 96, 4)]
    assert [a.on_bar(b) for b in bars[:5]] == [None] * 5
    fm = a.on_bar(bars[5])
    assert isinstance(fm, FeatureMatrix)
    assert fm.ts_ns == (M0 + 1) * PERIOD_NS and fm.kind == "strategic" and fm.instrument_id == "BTC"
    assert (fm.event_id, fm.bar_id) == ("SM-R-1", "B30-R-1") and not fm.ready
    assert fm.values.dtype == np.float32 and fm.values.shape == (48, 13)
    b30 = a.last_bar30
    assert b30 is not None and b30.event_id == fm.bar_id and b30.spec == "30m"
    assert (b30.ts_open, b30.ts_close) == (M0 * PERIOD_NS, (M0 + 1) * PERIOD_NS)
    assert (b30.open, b30.high, b30.low, b30.close, b30.volume, b30.n_ticks) == (100, 110, 90, 96, 30, 12)
    assert fm.context["close"] == 96 * 0.5 and fm.context["bar_index"] == 0.0
    assert set(fm.context) == set(CONTEXT_KEYS) and len(CONTEXT_KEYS) == 14
    # Rows before any data and columns before their valid-from bar hold the neutral row.
    np.testing.assert_array_equal(fm.values, np.tile(NEUTRAL, (48, 1)).astype(np.float32))


def test_bar_opening_on_the_boundary_starts_the_next_interval() -> None:
    a = assembler()
    out = [a.on_bar(flat(s, 1000 + s, v=1)) for s in range(5)]  # slots 0-4; slot 5 had no ticks
    assert out == [None] * 5
    fm = a.on_bar(flat(6, 2000, v=100))  # ts_open == (M0 + 1) * 1800 s exactly: interval M0 + 1
    assert fm is not None and fm.ts_ns == (M0 + 1) * PERIOD_NS
    assert a.gap_closes == 1 and a.last_bar30 is not None
    assert (a.last_bar30.volume, a.last_bar30.close) == (5, 1004)
    assert [a.on_bar(flat(s, 2000, v=1)) for s in range(7, 11)] == [None] * 4
    fm = a.on_bar(flat(11, 2000, v=1))
    assert fm is not None and fm.ts_ns == (M0 + 2) * PERIOD_NS and fm.context["bar_index"] == 1.0
    assert (a.last_bar30.open, a.last_bar30.volume) == (2000, 105)


def test_gap_can_close_two_bars_in_one_call() -> None:
    feed = [flat(0), flat(1), flat(2), flat(11, 1200)]  # slot 11 alone completes interval M0 + 1
    a = assembler()
    outs = [a.on_bar_all(b) for b in feed]
    assert outs[:3] == [[], [], []]
    both = outs[3]
    assert [f.ts_ns for f in both] == [(M0 + 1) * PERIOD_NS, (M0 + 2) * PERIOD_NS]
    assert [f.bar_id for f in both] == ["B30-R-1", "B30-R-2"]
    assert [f.context["close"] for f in both] == [500.0, 600.0]
    b = assembler()
    last = [b.on_bar(x) for x in feed][-1]
    assert last is not None and last.ts_ns == (M0 + 2) * PERIOD_NS and b.bars_30m == 2


def test_late_duplicate_malformed_and_foreign_bars_are_dropped() -> None:
    a = assembler()
    for s in range(6):
        a.on_bar(flat(s, v=1))
    assert a.on_bar(flat(3)) is None  # its interval has closed
    a.on_bar(flat(6, v=1))
    assert a.on_bar(flat(6)) is None  # duplicate of the pending interval's last bar
    assert a.on_bar(flat(5)) is None
    assert a.late_bars == 3
    assert a.on_bar(bar5(7, 1000, 1000, 1001, 1000)) is None  # low above open
    assert a.on_bar(bar5(7, 0, 0, 0, 0)) is None  # non-positive price
    assert a.on_bar(bar5(11, 1000, 1000, 1000, 1000, span=2)) is None  # straddles a boundary
    assert a.malformed_bars == 3
    assert a.on_bar(bar5(7, 1000, 1000, 1000, 1000, inst="ETH")) is None
    assert a.foreign_bars == 1
    for s in range(7, 11):
        a.on_bar(flat(s, v=1))
    fm = a.on_bar(flat(11, v=1))
    assert fm is not None and a.last_bar30 is not None and a.last_bar30.volume == 6


def test_first_partial_interval_is_dropped() -> None:
    a = assembler()
    assert [a.on_bar(flat(s)) for s in range(2, 6)] == [None] * 4
    assert a.dropped_partial_first == 1 and a.bars_30m == 0
    for s in range(6, 11):
        a.on_bar(flat(s))
    fm = a.on_bar(flat(11))
    assert fm is not None and fm.context["bar_index"] == 0.0 and fm.bar_id == "B30-R-1"


def test_flush_closes_on_the_clock() -> None:
    a = assembler()
    for s in range(4):
        a.on_bar(flat(s))
    end = (M0 + 1) * PERIOD_NS
    assert a.flush(end - 1) is None
    fm = a.flush(end + 200_000_000)
    assert fm is not None and fm.ts_ns == end and a.flush_closes == 1
    assert a.on_bar(flat(4)) is None and a.late_bars == 1


def expected_rows(bars30: list[Bar], cfg: StrategicConfig) -> list[tuple[np.ndarray, dict]]:
    """Rows rebuilt from the indicator modules on the same 30-minute bars."""
    tk = float(TICK)
    ml, nw, pr = MlmiState(cfg.mlmi), NwrqkState(cfg.nwrqk), VolumeProfileState(cfg.profile)
    fv, mm, vo = FvgTracker(cfg.fvg), MmdState(cfg.mmd), VolatilityState(cfg.vol)
    vf = cfg.valid_from()
    closes: list[float] = []
    rows = []
    for t, b in enumerate(bars30):
        o, h, l, c = b.open * tk, b.high * tk, b.low * tk, b.close * tk
        m, n, p, f = ml.update(c), nw.update(c), pr.update(h, l, float(b.volume), c), fv.update(o, h, l, c)
        closes.append(c)
        mo = cfg.momentum
        raw = [m.value, m.signal, n.value_col, n.slope_col,
               p.distance_col if p else 1.0, p.strength_col if p else 0.0,
               float(f.bull_active), float(f.bear_active),
               momentum_column(c, closes[-1 - mo.n_short], mo.scale_short_pct) if t >= mo.n_short else 0.0,
               momentum_column(c, closes[-1 - mo.n_long], mo.scale_long_pct) if t >= mo.n_long else 0.0,
               mm.update(c, h, l), vo.update(c).column, p.skew_col if p else 0.0]
        row = np.where(t >= vf, np.array(raw, dtype=np.float64), NEUTRAL)
        ctx = {"mlmi_value": m.value, "nwrqk_y": n.y if t >= 26 else 0.0,
               "nwrqk_change": float(n.change),
               "lvn_present": float(p is not None and p.lvn is not None)}
        rows.append((row, ctx))
    return rows


def test_readiness_point_in_time_and_wiring() -> None:
    cfg = StrategicConfig()
    a = assembler(cfg)
    out: list[FeatureMatrix] = []
    bars30: list[Bar] = []
    for b in walk(337 * 6, seed=11, shock_from=300 * 6):
        fm = a.on_bar(b)
        if fm is not None:
            out.append(fm)
            assert a.last_bar30 is not None
            bars30.append(a.last_bar30)
    assert len(out) == 337
    assert [f.ready for f in out].index(True) == 335 and all(f.ready for f in out[335:])
    for prev, cur in zip(out, out[1:]):
        np.testing.assert_array_equal(cur.values[:-1], prev.values[1:])  # rows never revised
    assert not out[-1].values.flags.writeable
    for f in out:
        assert np.isfinite(f.values).all() and set(f.context) == set(CONTEXT_KEYS)
        assert all(math.isfinite(v) for v in f.context.values())
        assert f.context["volatility_30_valid"] == float(f.context["bar_index"] >= cfg.vol.long)
    assert a.nonfinite_counts.sum() == 0
    want = expected_rows(bars30, cfg)
    for t in (0, 25, 26, 39, 47, 59, 240, 287, 288, 336):
        row, ctx = want[t]
        np.testing.assert_allclose(out[t].values[-1], np.clip(row, _LO, _HI).astype(np.float32),
                                   rtol=1e-6, atol=1e-7)
        assert out[t].context["mlmi_value"] == pytest.approx(ctx["mlmi_value"])
        assert out[t].context["nwrqk_y"] == pytest.approx(ctx["nwrqk_y"])
        assert out[t].context["lvn_present"] == ctx["lvn_present"]
    # The volatility shock over the last 37 bars shows in the regime columns.
    last = out[-1].values[-1]
    assert last[10] > 0.1 and last[11] > 0.3
    assert out[-1].context["volatility_30"] > 1.5
    # Before their valid-from bar the columns hold the neutral values.
    assert out[46].values[-1][4] == 1.0 and out[287].values[-1][10] == 0.0


def bar30(m: int, o: int, h: int, l: int, c: int, v: int) -> Bar:
    """One bar spanning a whole 30-minute interval (the assembler accepts any bar inside one)."""
    ts = (M0 + m) * PERIOD_NS
    return Bar(event_id=f"x{m}", ts_ns=ts + PERIOD_NS, instrument_id="BTC", spec="30m",
               ts_open=ts, ts_close=ts + PERIOD_NS, open=o, high=h, low=l, close=c, volume=v,
               n_ticks=1)


SMALL = StrategicConfig(
    rows=4, mlmi=MlmiConfig(k=3, trend=3, ma_fast=2, ma_slow=3, rsi_fast=2, rsi_slow=3, signal_wma=3,
                            store_max=5),
    nwrqk=NwrqkConfig(x0=2), profile=ProfileConfig(window=4, bins=4),
    momentum=MomentumConfig(n_short=2, n_long=3), mmd=MmdConfig(test=3, reference=4),
    vol=VolConfig(short=3, long=5))

PRICES = [1, 2, 3, 1000, 10**9, 10**12, 2**62]
bar_st = st.tuples(st.sampled_from(PRICES), st.sampled_from(PRICES), st.sampled_from([0, 1, 10**9]),
                   st.sampled_from([0, 1, 10**9]), st.sampled_from([0, 1, 10**15, 2**62]))


def check_matrix(fm: FeatureMatrix) -> None:
    assert np.isfinite(fm.values).all()
    assert (fm.values >= _LO.astype(np.float32)).all() and (fm.values <= _HI.astype(np.float32)).all()
    assert set(fm.context) == set(CONTEXT_KEYS)
    assert all(math.isfinite(v) for v in fm.context.values())


@settings(max_examples=25, deadline=None)
@given(st.lists(bar_st, min_size=1, max_size=30))
def test_adversarial_bars_give_finite_bounded_output(raw: list[tuple[int, int, int, int, int]]) -> None:
    a = StrategicAssembler(SMALL, INST, IdSource())
    for m, (o, c, dl, dh, v) in enumerate(raw):
        lo, hi = max(1, min(o, c) - dl), min(2**63 - 1, max(o, c) + dh)
        fm = a.on_bar(bar30(m, o, hi, lo, c, v))
        assert fm is not None and fm.ready == (m >= SMALL.ready_from)
        check_matrix(fm)


def test_flat_zero_volume_default_config() -> None:
    a = assembler()
    fm = None
    for m in range(340):
        fm = a.on_bar(bar30(m, 1000, 1000, 1000, 1000, 0))
        assert fm is not None
        check_matrix(fm)
    assert fm is not None and fm.ready
    np.testing.assert_array_equal(fm.values, np.tile(NEUTRAL, (48, 1)).astype(np.float32))
    assert fm.context["lvn_present"] == 0.0 and fm.context["volatility_30"] == 1.0
    assert a.nonfinite_counts.sum() == 0 and a.context_nonfinite == 0


def test_nonfinite_values_are_replaced_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    a = StrategicAssembler(SMALL, INST, IdSource())
    monkeypatch.setattr(a._mmd, "update", lambda c, h, l: math.inf)
    monkeypatch.setattr(a._vol, "update", lambda c: VolOutput(math.nan, math.nan, math.nan, math.nan))
    fms = [a.on_bar(bar30(m, 1000 + m, 1010 + m, 990, 1000 + m, 5)) for m in range(10)]
    for fm in fms:
        assert fm is not None
        check_matrix(fm)
    last = fms[-1]
    assert last is not None and last.values[-1][10] == 0.0 and last.values[-1][11] == 0.0
    # Counted only once valid: mmd from bar 7, vol from bar 5 (bars 0..9).
    assert a.nonfinite_counts[10] == 3 and a.nonfinite_counts[11] == 5
    assert last.context["volatility_30"] == 1.0 and last.context["volatility_30_pct"] == 0.0
    # ... and the 1.0 is marked as a placeholder (the synergy detector will not use it)
    assert all(fm is not None and fm.context["volatility_30_valid"] == 0.0 for fm in fms)
    assert a.context_nonfinite == 2 * 5 + 2  # v_rel (5 bars from 5) and v30 (7 bars from 3)


def load_btc_5m(n_rows: int) -> list[Bar]:
    import pyarrow.csv as pacsv

    path = DATA / "btc-perp-20211231-20220201_1m.csv"
    if not path.exists():
        pytest.skip(f"recorded data not found at {path}")
    tab = pacsv.read_csv(path).slice(0, n_rows)
    ts = tab["timestamp"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    cols = {k: tab[k].to_numpy() for k in ("open", "high", "low", "close", "volume")}
    slot = ts // P5
    bars = []
    starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
    ends = np.r_[starts[1:], len(ts)]
    for s, e in zip(starts, ends):
        k = int(slot[s])
        bars.append(Bar(event_id=f"b{k}", ts_ns=(k + 1) * P5, instrument_id="BTC-PERP", spec="5m",
                        ts_open=k * P5, ts_close=(k + 1) * P5, open=int(cols["open"][s]),
                        high=int(cols["high"][s:e].max()), low=int(cols["low"][s:e].min()),
                        close=int(cols["close"][e - 1]), volume=int(round(cols["volume"][s:e].sum())),
                        n_ticks=int(e - s)))
    return bars


def test_recorded_btc_bars() -> None:
    """Recorded BTC perpetual 1-minute bars (NautilusTrader fixture) aggregated to 5-minute bars here."""
    bars = load_btc_5m(14_000)
    a = StrategicAssembler(StrategicConfig(), Instrument(id="BTC-PERP", tick_size=Decimal(1)),
                           IdSource())
    out = [fm for b in bars for fm in a.on_bar_all(b)]
    assert len(out) > 340 and out[-1].ready
    assert a.dropped_partial_first == 0  # the first 1-minute bar (23:01) lies in the 23:00 5-minute bar
    for fm in out:
        check_matrix(fm)
    vals = np.stack([fm.values[-1] for fm in out])
    assert (vals[:, 1] != 0).any() and (vals[:, 10] > 0).any()
    assert any(fm.context["nwrqk_change"] != 0 for fm in out)
    assert any(fm.context["lvn_present"] == 1.0 for fm in out)
    assert a.nonfinite_counts.sum() == 0 and a.malformed_bars == 0


raw_st = st.one_of(st.floats(-3.0, 3.0), st.sampled_from([math.nan, math.inf, -math.inf, 1.5, -0.0]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(raw_st, min_size=N_COLS, max_size=N_COLS), st.integers(0, 60)),
                min_size=1, max_size=12),
       st.integers(1, 5))
def test_row_kernel_matches_numpy_steps(steps: list[tuple[list[float], int]], rows: int) -> None:
    valid_from = np.array([0, 5, 10, 20, 30, 40, 50, 1, 2, 3, 4, 6, 7], dtype=np.int64)
    ring = np.tile(NEUTRAL.astype(np.float32), (2 * rows, 1))
    window = np.tile(NEUTRAL.astype(np.float32), (rows, 1))  # the straightforward shifted window
    counts = np.zeros(N_COLS, dtype=np.int64)
    want_counts = np.zeros(N_COLS, dtype=np.int64)
    row64 = np.zeros(N_COLS)
    for i, (raw, t) in enumerate(steps):
        values = finish_row(tuple(raw), t, valid_from, ring, i % rows, counts, row64)
        row = np.where(t >= valid_from, np.array(raw), NEUTRAL)
        bad = ~np.isfinite(row)
        want_counts += bad
        row[bad] = NEUTRAL[bad]
        row = np.clip(row, _LO, _HI)
        window[:-1] = window[1:]
        window[-1] = row
        np.testing.assert_array_equal(row64, row)
        np.testing.assert_array_equal(values, window)
        assert values.dtype == np.float32 and not np.shares_memory(values, ring)
    np.testing.assert_array_equal(counts, want_counts)


def test_warmup_compiled_every_kernel_the_run_uses() -> None:
    """No numba compilation after `warmup()` (module import above): every runtime call matches a
    warmed signature (an int in the raw row tuple, say, would compile a second version)."""
    from numba.core import event

    with event.install_recorder("numba:compile") as rec:
        a = assembler()
        for b in walk(300 * 6, seed=21):
            a.on_bar(b)
    assert a.bars_30m == 300 and a.t >= SMALL.ready_from
    assert rec.buffer == []
