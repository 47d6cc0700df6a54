"""Strategic feature matrix: 48 x 13 float32 on 30-minute bars (spec features.md section 3).

30-minute bars (spec 1.5) are aggregated here from closed 5-minute bars (any bar lying inside one
30-minute interval works): a bar belongs to interval m when `m*1800 s <= ts_open < (m+1)*1800 s`;
first open, max high, min low, last close, summed volume and ticks. The pending 30-minute bar closes
- when the bar that completes it arrives (`ts_close == (m+1)*1800 s`), after merging that bar;
- before processing a bar of a LATER interval (a gap: the last 5-minute slot had no ticks), so that
  call may close two 30-minute bars (the pending one, then the new bar's own interval if that one
  bar completes it); `on_bar_all` returns both in order, `on_bar` only the newest;
- on `flush(now_ns)` once `now_ns >= (m+1)*1800 s` (for a clock timer in live mode).
Its `ts_ns` is always the label `(m+1)*1800 s`. A bar of an interval already closed, or not later than
the previous bar of the pending interval, is late: dropped and counted (`late_bars`); a bar that fails
spec 1.8 validity or straddles a 30-minute boundary is dropped and counted (`malformed_bars`); another
instrument's bar is dropped and counted (`foreign_bars`). As spec 1.3 asks for a session's first bar,
the FIRST 30-minute bar is dropped (`dropped_partial_first`) unless its first 5-minute bar opens exactly
at the interval start. Prices are `ticks * tick_size` as float64; volume is the lots sum.

Bar t = the t-th 30-minute bar used (t = 0 first). Row 47 is bar t, row 0 bar t-47; a row is computed
once at its bar's close and never revised (ring buffer, copied out read-only). Before a column's
"valid from" bar it holds the column's neutral value (0; 1 for col 4, "no LVN = far"); rows before
bar 0 hold the neutral row.

| col | name | formula (module) | valid from |
| --- | --- | --- | --- |
| 0 | mlmi_value | kNN vote `P_t / k_eff` (mlmi.py), in [-1, 1] | 39 |
| 1 | mlmi_signal | `P` crossing `WMA_20(P)`: -1/0/+1 (mlmi.py) | 59 |
| 2 | nwrqk_value | `clip(100 (y_t - C_t)/C_t, -5, 5) / 5` (nwrqk.py) | 26 |
| 3 | nwrqk_slope | `tanh(s_t / 0.1)`, `s_t = 100 (y_t - y_{t-1})/y_{t-1}` (nwrqk.py) | 27 |
| 4 | lvn_distance | `min(1, d / 2)`, `d = 100 abs(C_t - p_lvn)/C_t`, 48-bar profile; 1 if none (lvn.py) | 47 |
| 5 | lvn_strength | `1 - v_lvn / v_poc`; 0 if none (lvn.py) | 47 |
| 6 | fvg_bullish_active | FVG tracker (fvg.py, spec 2.1-2.2) on 30-minute bars, own state | 2 |
| 7 | fvg_bearish_active | idem | 2 |
| 8 | momentum_20 | `tanh(m20 / 5)`, `m20 = 100 (C_t - C_{t-20})/C_{t-20}` | 20 |
| 9 | momentum_50 | `tanh(m50 / 10)`, `m50 = 100 (C_t - C_{t-50})/C_{t-50}` | 50 |
| 10 | mmd_score | `sqrt(max(0, MMD2_u))`, 48 test vs 240 reference bars (mmd.py), in [0, sqrt 2] | 288 |
| 11 | volatility_30 | `tanh(ln v_rel)`, `v_rel = v30 / v240` (volatility.py) | 240 |
| 12 | volume_profile_skew | `tanh(skew)` of the 48-bar profile (lvn.py) | 47 |

Windows and scales come from `StrategicConfig` (the table shows the defaults; valid-from bars follow
from them). `ready` when `t >= max(valid from) + rows - 1` (288 + 47 = 335: 336 bars, 7 days).

Data quality (spec 5): arithmetic in float64; a non-finite valid cell is replaced by its column's
neutral value and counted per column in `nonfinite_counts`; a final clip to the table range guards
rounding. `context` carries, all finite: close, bar_index, mlmi_value, mlmi_signal, nwrqk_y,
nwrqk_slope_pct, nwrqk_change (+1 bullish / -1 bearish direction change, 0 none), volatility_30
(v_rel; 1 until valid), volatility_30_pct (v30; 0 until valid), volatility_30_valid (1 when v_rel is
valid and finite, else 0: the 1.0 above is then a placeholder no consumer may use), lvn_present,
lvn_price, lvn_strength, lvn_distance_pct (0 when there is no LVN). Values not yet valid are 0; a
non-finite context value is replaced the same way and counted in `context_nonfinite`.

Cost: the numba kernel `finish_row` applies validity, substitution and clipping and writes the row
into a float32 ring of 2 x rows (each row at slots i and i + rows), so the published matrix is one
contiguous slice copied out; the indicator states keep their own rings (see their modules).
"""

from __future__ import annotations

import math
from collections import deque

import numba
import numpy as np

from himari.daemon.events import Bar, FeatureMatrix
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.matrices import lvn, mlmi, mmd, nwrqk, volatility
from himari.daemon.matrices.fvg import FvgTracker
from himari.daemon.matrices.lvn import VolumeProfileState
from himari.daemon.matrices.mlmi import MlmiState
from himari.daemon.matrices.mmd import MmdState
from himari.daemon.matrices.nwrqk import NwrqkState
from himari.daemon.matrices.volatility import VolatilityState
from himari.daemon.matrices.config import (  # noqa: F401 (re-exported)
    FVG_VALID_FROM, MomentumConfig, StrategicConfig)

PERIOD_NS = 1800 * 1_000_000_000
N_COLS = 13
COLUMNS = ("mlmi_value", "mlmi_signal", "nwrqk_value", "nwrqk_slope", "lvn_distance",
           "lvn_strength", "fvg_bullish_active", "fvg_bearish_active", "momentum_20",
           "momentum_50", "mmd_score", "volatility_30", "volume_profile_skew")
NEUTRAL = np.zeros(N_COLS)
NEUTRAL[4] = 1.0
_LO = np.array([-1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0, 0.0, -1.0, -1.0])
_HI = np.array([1.0] * 10 + [math.sqrt(2.0), 1.0, 1.0])
CONTEXT_KEYS = ("close", "bar_index", "mlmi_value", "mlmi_signal", "nwrqk_y", "nwrqk_slope_pct",
                "nwrqk_change", "volatility_30", "volatility_30_pct", "volatility_30_valid",
                "lvn_present", "lvn_price", "lvn_strength", "lvn_distance_pct")
_CONTEXT_DEFAULT = {"volatility_30": 1.0}


def momentum_column(c_now: float, c_then: float, scale_pct: float) -> float:
    if not c_then > 0.0:
        return math.nan
    return math.tanh(100.0 * (c_now - c_then) / c_then / scale_pct)


@numba.njit(cache=True)
def finish_row(raw: tuple[float, ...], t: int, valid_from: np.ndarray, ring: np.ndarray, head: int,
               counts: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Row t from the raw column values: neutral before a column's valid-from bar, a non-finite valid
    value replaced by the neutral one and counted, clipped to the table range; written (float64) to
    `row` and (float32) to ring slots head and head + rows. Returns the newest `rows` rows, a copy."""
    rows = ring.shape[0] // 2
    for c in range(N_COLS):
        v = raw[c] if t >= valid_from[c] else NEUTRAL[c]
        if not abs(v) < np.inf:
            counts[c] += 1
            v = NEUTRAL[c]
        v = min(max(v, _LO[c]), _HI[c])
        row[c] = v
        ring[head, c] = v
        ring[head + rows, c] = v
    return ring[head + 1:head + 1 + rows].copy()


def warmup() -> None:
    """Compile every numba kernel the strategic matrix uses."""
    for module in (mlmi, nwrqk, lvn, mmd, volatility):
        module.warmup()
    ring = np.zeros((2, N_COLS), dtype=np.float32)
    finish_row((0.0,) * N_COLS, 0, np.zeros(N_COLS, dtype=np.int64), ring, 0,
               np.zeros(N_COLS, dtype=np.int64), np.zeros(N_COLS))


class _Pending:
    __slots__ = ("m", "open", "high", "low", "close", "volume", "n_ticks", "last_open",
                 "aligned_start")

    def __init__(self, m: int, bar: Bar) -> None:
        self.m = m
        self.open, self.high, self.low, self.close = bar.open, bar.high, bar.low, bar.close
        self.volume, self.n_ticks = bar.volume, bar.n_ticks
        self.last_open = bar.ts_open
        self.aligned_start = bar.ts_open == m * PERIOD_NS


class StrategicAssembler:
    """Aggregates 30-minute bars and publishes the 48 x 13 matrix at each 30-minute close.

    Counters: bars_30m, late_bars, malformed_bars, foreign_bars, dropped_partial_first,
    gap_closes, flush_closes, nonfinite_counts (per column), context_nonfinite.
    """

    def __init__(self, cfg: StrategicConfig, instrument: Instrument, ids: IdSource) -> None:
        self.cfg = cfg
        self.instrument = instrument
        self._ids = ids
        self._tick = float(instrument.tick_size)
        self._valid_from = cfg.valid_from()
        self.ready_from = cfg.ready_from
        self._mlmi = MlmiState(cfg.mlmi)
        self._nwrqk = NwrqkState(cfg.nwrqk)
        self._profile = VolumeProfileState(cfg.profile)
        self._fvg = FvgTracker(cfg.fvg)
        self._mmd = MmdState(cfg.mmd)
        self._vol = VolatilityState(cfg.vol)
        self._closes: deque[float] = deque(maxlen=max(cfg.momentum.n_short, cfg.momentum.n_long) + 1)
        self._vf = tuple(int(v) for v in self._valid_from)
        self._ring = np.tile(NEUTRAL.astype(np.float32), (2 * cfg.rows, 1))  # rows at i and i + rows
        self._head = 0
        self._row = np.zeros(N_COLS)
        self._inst_id = instrument.id
        self._pending: _Pending | None = None
        self._last_closed_m: int | None = None
        self._started = False
        self.t = -1
        self.last_bar30: Bar | None = None
        self.bars_30m = 0
        self.late_bars = 0
        self.malformed_bars = 0
        self.foreign_bars = 0
        self.dropped_partial_first = 0
        self.gap_closes = 0
        self.flush_closes = 0
        self.nonfinite_counts = np.zeros(N_COLS, dtype=np.int64)
        self.context_nonfinite = 0

    @property
    def mlmi_store_entries(self) -> int:
        """Entries in MLMI's neighbour store (MLMI is local once it holds `cfg.mlmi.k`, spec 3.1)."""
        return self._mlmi.store.n

    # ---- aggregation

    def on_bar(self, bar5m: Bar) -> FeatureMatrix | None:
        """Feed one closed 5-minute bar; the newest matrix closed by it, else None."""
        out = self.on_bar_all(bar5m)
        return out[-1] if out else None

    def on_bar_all(self, bar5m: Bar) -> list[FeatureMatrix]:
        """Feed one closed 5-minute bar; every matrix it closes, oldest first (0, 1 or 2)."""
        bar = bar5m
        if bar.instrument_id != self._inst_id:
            self.foreign_bars += 1
            return []
        ts_open = bar.ts_open
        ts_close = bar.ts_close
        m = ts_open // PERIOD_NS
        o, h, l, c = bar.open, bar.high, bar.low, bar.close
        # Spec 1.8 validity plus a positive duration, inside one 30-minute interval.
        if not (0 < l <= o <= h and l <= c <= h and bar.volume >= 0 and bar.n_ticks >= 0
                and ts_open < ts_close and (ts_close - 1) // PERIOD_NS == m):
            self.malformed_bars += 1
            return []
        pending = self._pending
        if pending is None:
            if self._last_closed_m is not None and m <= self._last_closed_m:
                self.late_bars += 1
                return []
            out: list[FeatureMatrix] = []
        elif m == pending.m:
            if ts_open <= pending.last_open:
                self.late_bars += 1
                return []
            out = []
        elif m > pending.m:
            self.gap_closes += 1
            out = []
            self._close_pending(out)
            pending = None
        else:
            self.late_bars += 1
            return []
        if pending is None:
            self._pending = _Pending(m, bar)
        else:  # merge
            if h > pending.high:
                pending.high = h
            if l < pending.low:
                pending.low = l
            pending.close = c
            pending.volume += bar.volume
            pending.n_ticks += bar.n_ticks
            pending.last_open = ts_open
        if ts_close == (m + 1) * PERIOD_NS:
            self._close_pending(out)
        return out

    def flush(self, now_ns: int) -> FeatureMatrix | None:
        """Close the pending 30-minute bar if the clock has reached its end (live timer)."""
        p = self._pending
        if p is None or now_ns < (p.m + 1) * PERIOD_NS:
            return None
        self.flush_closes += 1
        out: list[FeatureMatrix] = []
        self._close_pending(out)
        return out[-1] if out else None

    def _close_pending(self, out: list[FeatureMatrix]) -> None:
        p = self._pending
        assert p is not None
        self._pending = None
        self._last_closed_m = p.m
        first = not self._started
        self._started = True
        if first and not p.aligned_start:
            self.dropped_partial_first += 1
            return
        out.append(self._emit(p))

    # ---- the row

    def _emit(self, p: _Pending) -> FeatureMatrix:
        cfg = self.cfg
        tick = self._tick
        o, h, l, c = p.open * tick, p.high * tick, p.low * tick, p.close * tick
        v = float(p.volume)
        self.t += 1
        t = self.t
        self.bars_30m += 1
        ts_close = (p.m + 1) * PERIOD_NS
        bar_id = self._ids.next("B30")
        self.last_bar30 = Bar(event_id=bar_id, ts_ns=ts_close, instrument_id=self.instrument.id,
                              spec="30m", ts_open=p.m * PERIOD_NS, ts_close=ts_close, open=p.open,
                              high=p.high, low=p.low, close=p.close, volume=p.volume,
                              n_ticks=p.n_ticks)

        ml = self._mlmi.update(c)
        nw = self._nwrqk.update(c)
        pr = self._profile.update(h, l, v, c)
        fv = self._fvg.update(o, h, l, c)
        self._closes.append(c)
        mom = cfg.momentum
        closes = self._closes
        m_s = momentum_column(c, closes[-1 - mom.n_short], mom.scale_short_pct) \
            if len(closes) > mom.n_short else math.nan
        m_l = momentum_column(c, closes[-1 - mom.n_long], mom.scale_long_pct) \
            if len(closes) > mom.n_long else math.nan
        mmd_score = self._mmd.update(c, h, l)
        vol = self._vol.update(c)

        raw = (ml.value, float(ml.signal), nw.value_col, nw.slope_col,
               pr.distance_col if pr is not None else math.nan,
               pr.strength_col if pr is not None else math.nan,
               1.0 if fv.bull_active else 0.0, 1.0 if fv.bear_active else 0.0,
               m_s, m_l, mmd_score, vol.column,
               pr.skew_col if pr is not None else math.nan)
        head = self._head
        self._head = (head + 1) % cfg.rows
        values = finish_row(raw, t, self._valid_from, self._ring, head, self.nonfinite_counts,
                            self._row)
        values.flags.writeable = False
        row = self._row

        vf = self._vf
        lvn_ = pr.lvn if (pr is not None and t >= vf[4]) else None
        vol_valid = t >= vf[11] and math.isfinite(vol.v_rel) and math.isfinite(vol.v_short_pct)
        ctx = {
            "close": c,
            "bar_index": float(t),
            "mlmi_value": float(row[0]),
            "mlmi_signal": float(row[1]),
            "nwrqk_y": nw.y if t >= vf[2] else 0.0,
            "nwrqk_slope_pct": nw.slope_pct if t >= vf[3] else 0.0,
            "nwrqk_change": float(nw.change) if t >= cfg.nwrqk.change_valid_from else 0.0,
            "volatility_30": vol.v_rel if t >= vf[11] else 1.0,
            "volatility_30_pct": vol.v_short_pct if t >= cfg.vol.short else 0.0,
            "volatility_30_valid": 1.0 if vol_valid else 0.0,
            "lvn_present": 1.0 if lvn_ is not None else 0.0,
            "lvn_price": lvn_.price if lvn_ is not None else 0.0,
            "lvn_strength": lvn_.strength if lvn_ is not None else 0.0,
            "lvn_distance_pct": lvn_.distance_pct if lvn_ is not None else 0.0,
        }
        for key, value in ctx.items():
            if not math.isfinite(value):
                self.context_nonfinite += 1
                ctx[key] = _CONTEXT_DEFAULT.get(key, 0.0)  # replacing a value keeps the key order

        return FeatureMatrix(event_id=self._ids.next("SM"), ts_ns=ts_close,
                             instrument_id=self.instrument.id, kind="strategic", bar_id=bar_id,
                             values=values, ready=t >= self.ready_from, context=ctx)

