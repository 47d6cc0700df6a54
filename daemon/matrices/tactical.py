"""Tactical feature matrix: 60 x 7 float32 on closed 5-minute bars (spec features.md section 2).

Bar t is the t-th closed bar since start (t = 0 first); prices are `ticks * tick_size` as float64.
Row 59 is bar t (newest), row 0 bar t-59; a row is computed once at its bar's close and never revised
(ring buffer, copied out read-only on publish). Before a column's "valid from" bar it is 0.

| col | name | formula | valid from |
| --- | --- | --- | --- |
| 0 | fvg_bullish_active | 1 if the FVG tracker (fvg.py) holds an active bullish gap | t >= 2 |
| 1 | fvg_bearish_active | 1 if it holds an active bearish gap | t >= 2 |
| 2 | fvg_nearest_level | `clip(100 (level - C_t) / C_t, -P, P) / P`, P = fvg.level_clip_pct (2); 0 if none | t >= 2 |
| 3 | fvg_age | `exp(-age / fvg.age_decay)` (10) of the nearest gap; 0 if none | t >= 2 |
| 4 | fvg_mitigation_signal | 1 if a gap was mitigated at bar t | t >= 3 |
| 5 | price_momentum_5 | `m = clip(100 (C_t - C_{t-n}) / C_{t-n}, -K, K)`, n = 5, K = 10; `tanh(m / 5)` | t >= n |
| 6 | volume_ratio | `EMA_t = a V_t + (1 - a) EMA_{t-1}`, a = 2/(N+1), N = 20, `EMA_0 = V_0`; | t >= N - 1 |
|   |              | `rho = V_t / EMA_t` (1 if `EMA_t <= 0`); `tanh(ln(1 + max(0, rho - 1)))`      |            |

Column 6 for rho > 1 equals `(rho^2 - 1) / (rho^2 + 1)` (computed that way); rho <= 1 gives 0.
`ready` when `t >= max(valid-from) + rows - 1` (78 with defaults): every row fully warm.

Data quality (spec 5): arithmetic in float64; a bad denominator gives the column's neutral value 0; a
non-finite value is replaced by 0 and counted per column in `nonfinite_counts`; a final clip to the
column's range guards rounding.

Also kept, for the context only: Wilder ATR(14) on these bars, `TR_0 = H_0 - L_0`,
`TR_t = max(H - L, |H - C_{t-1}|, |L - C_{t-1}|)`, seeded with the mean of the first 14 TRs, then
`ATR_t = (ATR_{t-1} 13 + TR_t) / 14`; 0 until t >= 13.

`context` (price units): close, bar_index (t), volume_ratio (rho), atr14, fvg_mitigated,
fvg_bull_mitigated / fvg_bear_mitigated (0/1), and per side the size and level of the largest gap
mitigated at bar t (fvg_bull_mitigated_size, _level, fvg_bear_mitigated_size, _level; 0 when none).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from himari.daemon.events import Bar, FeatureMatrix
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.matrices.fvg import FvgOutput, FvgTracker
from himari.daemon.matrices.config import FvgConfig, TacticalConfig  # noqa: F401 (FvgConfig re-exported)

N_COLS = 7
ATR_PERIOD = 14
COLUMNS = ("fvg_bullish_active", "fvg_bearish_active", "fvg_nearest_level", "fvg_age",
           "fvg_mitigation_signal", "price_momentum_5", "volume_ratio")
# Final guard ranges per column (spec table 2).
_LO = np.array([0.0, 0.0, -1.0, 0.0, 0.0, -1.0, 0.0])
_HI = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
_LO_F = tuple(float(x) for x in _LO)
_HI_F = tuple(float(x) for x in _HI)


def volume_column(rho: float) -> float:
    """`tanh(ln(1 + max(0, rho - 1)))`, written as `(rho^2 - 1)/(rho^2 + 1)` for rho > 1."""
    if not rho > 1.0:
        return 0.0
    r2 = rho * rho
    return (r2 - 1.0) / (r2 + 1.0)


def momentum_column(c_now: float, c_then: float, clip: float, scale: float) -> float:
    if not c_then > 0.0:
        return 0.0
    m = 100.0 * (c_now - c_then) / c_then
    return math.tanh(min(clip, max(-clip, m)) / scale)


class TacticalAssembler:
    """Builds one tactical row per closed 5-minute bar and publishes the whole matrix.

    Hot path (one call per 5-minute bar): the row is computed in Python floats (numpy calls on a
    7-element row cost more than the maths), range and finiteness are checked together and fixed
    on a slow path, and rows live in a float32 buffer of 2 x rows whose newest `rows` rows are
    always one contiguous slice, so a matrix is a single slice copy (no reordering of a ring).
    """

    def __init__(self, cfg: TacticalConfig, instrument: Instrument, ids: IdSource) -> None:
        self.cfg = cfg
        self.instrument = instrument
        self.ids = ids
        self._tick = float(instrument.tick_size)
        self._fvg = FvgTracker(cfg.fvg)
        self._alpha = 2.0 / (cfg.volume_ema + 1.0)
        self._ema = 0.0
        self._closes: deque[float] = deque(maxlen=cfg.momentum_n + 1)
        self._prev_close = math.nan
        self._tr_seed: list[float] = []
        self._atr = 0.0
        self._rows = cfg.rows
        # The newest row is _buf[_pos - 1] and the matrix _buf[_pos - rows:_pos]. When the buffer is
        # full its newest rows - 1 rows move to the front (once every `rows` bars).
        self._buf = np.zeros((2 * cfg.rows, N_COLS), dtype=np.float32)
        self._pos = cfg.rows
        self._t = -1
        self.valid_from = np.array([2, 2, 2, 2, 3, cfg.momentum_n, cfg.volume_ema - 1])
        self._valid_from = [int(x) for x in self.valid_from]
        self._warm_from = max(self._valid_from)  # every column is valid from this bar on
        self.ready_from = int(self.valid_from.max()) + cfg.rows - 1
        self.nonfinite_counts = np.zeros(N_COLS, dtype=np.int64)
        self.last_fvg: FvgOutput | None = None
        self._mom_n = cfg.momentum_n
        self._mom_clip, self._mom_scale = cfg.momentum_clip, cfg.momentum_scale
        self._level_clip = cfg.fvg.level_clip_pct
        self._age_decay = cfg.fvg.age_decay

    @property
    def t(self) -> int:
        """Index of the last bar processed (-1 before the first)."""
        return self._t

    @property
    def atr14(self) -> float:
        return self._atr

    def on_bar(self, bar: Bar) -> FeatureMatrix:
        tick = self._tick
        o, h, l, c = bar.open * tick, bar.high * tick, bar.low * tick, bar.close * tick
        v = float(bar.volume)
        t = self._t = self._t + 1

        fvg = self.last_fvg = self._fvg.update(o, h, l, c)
        (_, bull_active, bear_active, level, age, side, mitigated, bull_mit, bear_mit,
         bull_size, bull_level, bear_size, bear_level, _, _, _) = fvg

        closes = self._closes
        closes.append(c)
        if t == 0:
            ema = v
        else:
            alpha = self._alpha
            ema = alpha * v + (1.0 - alpha) * self._ema
        self._ema = ema
        rho = v / ema if ema > 0.0 else 1.0
        if not math.isfinite(rho):
            rho = 1.0
        # Wilder ATR(14), seeded with the mean of the first 14 true ranges.
        pc = self._prev_close
        self._prev_close = c
        tr = h - l if t == 0 else max(h - l, abs(h - pc), abs(l - pc))
        if t >= ATR_PERIOD:
            atr = self._atr = (self._atr * (ATR_PERIOD - 1) + tr) / ATR_PERIOD
        else:
            seed = self._tr_seed
            seed.append(tr)
            if t == ATR_PERIOD - 1:
                self._atr = math.fsum(seed) / ATR_PERIOD
            atr = self._atr

        r2 = r3 = r5 = r6 = 0.0
        if side != 0 and c > 0.0:
            p = self._level_clip
            r2 = min(p, max(-p, 100.0 * (level - c) / c)) / p
            r3 = math.exp(-age / self._age_decay)
        if t >= self._mom_n:
            r5 = momentum_column(c, closes[0], self._mom_clip, self._mom_scale)
        if rho > 1.0:  # volume_column(rho), inlined
            rr = rho * rho
            r6 = (rr - 1.0) / (rr + 1.0)
        row = (1.0 if bull_active else 0.0, 1.0 if bear_active else 0.0, r2, r3,
               1.0 if mitigated else 0.0, r5, r6)
        if t < self._warm_from:
            row = tuple(0.0 if t < vf else x for x, vf in zip(row, self._valid_from))
            r2, r3, r5, r6 = row[2], row[3], row[5], row[6]
        # One test for "finite and inside the column range" (NaN fails every comparison).
        if not (-1.0 <= r2 <= 1.0 and 0.0 <= r3 <= 1.0 and -1.0 <= r5 <= 1.0 and 0.0 <= r6 <= 1.0):
            row = self._repair(row)

        buf = self._buf
        rows = self._rows
        pos = self._pos
        if pos == 2 * rows:
            buf[:rows - 1] = buf[pos - rows + 1:pos]
            pos = rows - 1
        buf[pos] = row
        pos += 1
        self._pos = pos
        values = buf[pos - rows:pos].copy()
        values.setflags(write=False)

        context = {
            "close": c,
            "bar_index": float(t),
            "volume_ratio": rho,
            "atr14": atr,
            "fvg_mitigated": 1.0 if mitigated else 0.0,
            "fvg_bull_mitigated": 1.0 if bull_mit else 0.0,
            "fvg_bear_mitigated": 1.0 if bear_mit else 0.0,
            "fvg_bull_mitigated_size": bull_size,
            "fvg_bull_mitigated_level": bull_level,
            "fvg_bear_mitigated_size": bear_size,
            "fvg_bear_mitigated_level": bear_level,
        }
        return FeatureMatrix(
            event_id=self.ids.next("TM"),
            ts_ns=bar.ts_ns,
            instrument_id=bar.instrument_id,
            kind="tactical",
            bar_id=bar.event_id,
            values=values,
            ready=t >= self.ready_from,
            context=context,
        )

    def snapshot(self) -> np.ndarray:
        """The matrix as it stands, oldest row first, as a read-only copy."""
        out = self._buf[self._pos - self._rows:self._pos].copy()
        out.flags.writeable = False
        return out

    def _repair(self, row: tuple[float, ...]) -> tuple[float, ...]:
        """Spec 5: a non-finite value becomes 0 and is counted; then clip to the column range."""
        out = []
        for k, x in enumerate(row):
            if not math.isfinite(x):
                self.nonfinite_counts[k] += 1
                x = 0.0
            out.append(min(_HI_F[k], max(_LO_F[k], x)))
        return tuple(out)
