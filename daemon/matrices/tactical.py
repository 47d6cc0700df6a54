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

import msgspec
import numpy as np

from himari.daemon.configbase import check_range
from himari.daemon.events import Bar, FeatureMatrix
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.matrices.fvg import FvgConfig, FvgOutput, FvgTracker

N_COLS = 7
ATR_PERIOD = 14
COLUMNS = ("fvg_bullish_active", "fvg_bearish_active", "fvg_nearest_level", "fvg_age",
           "fvg_mitigation_signal", "price_momentum_5", "volume_ratio")
# Final guard ranges per column (spec table 2).
_LO = np.array([0.0, 0.0, -1.0, 0.0, 0.0, -1.0, 0.0])
_HI = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


class TacticalConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    momentum_n: int = 5
    momentum_clip: float = 10.0
    momentum_scale: float = 5.0
    volume_ema: int = 20
    rows: int = 60
    fvg: FvgConfig = msgspec.field(default_factory=FvgConfig)

    def __post_init__(self) -> None:
        check_range("tactical.momentum_n", self.momentum_n, 1, 10_000)
        check_range("tactical.momentum_clip", self.momentum_clip, 0.0, 1e6, lo_open=True)
        check_range("tactical.momentum_scale", self.momentum_scale, 0.0, 1e6, lo_open=True)
        check_range("tactical.volume_ema", self.volume_ema, 1, 10_000)
        check_range("tactical.rows", self.rows, 1, 100_000)


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
    """Builds one tactical row per closed 5-minute bar and publishes the whole matrix."""

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
        self._buf = np.zeros((cfg.rows, N_COLS), dtype=np.float32)
        self._head = 0  # ring index of the oldest row (= next row to overwrite)
        self._t = -1
        self.valid_from = np.array([2, 2, 2, 2, 3, cfg.momentum_n, cfg.volume_ema - 1])
        self.ready_from = int(self.valid_from.max()) + cfg.rows - 1
        self.nonfinite_counts = np.zeros(N_COLS, dtype=np.int64)
        self.last_fvg: FvgOutput | None = None

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
        self._t += 1
        t = self._t
        cfg = self.cfg

        fvg = self._fvg.update(o, h, l, c)
        self.last_fvg = fvg

        self._closes.append(c)
        if t == 0:
            self._ema = v
        else:
            self._ema = self._alpha * v + (1.0 - self._alpha) * self._ema
        rho = v / self._ema if self._ema > 0.0 else 1.0
        if not math.isfinite(rho):
            rho = 1.0
        self._update_atr(h, l, c)

        row = np.zeros(N_COLS, dtype=np.float64)
        row[0] = 1.0 if fvg.bull_active else 0.0
        row[1] = 1.0 if fvg.bear_active else 0.0
        if fvg.nearest_side != 0 and c > 0.0:
            p = cfg.fvg.level_clip_pct
            row[2] = min(p, max(-p, 100.0 * (fvg.nearest_level - c) / c)) / p
            row[3] = math.exp(-fvg.nearest_age / cfg.fvg.age_decay)
        row[4] = 1.0 if fvg.mitigated else 0.0
        if t >= cfg.momentum_n:
            row[5] = momentum_column(c, self._closes[0], cfg.momentum_clip, cfg.momentum_scale)
        row[6] = volume_column(rho)

        row[t < self.valid_from] = 0.0
        bad = ~np.isfinite(row)
        if bad.any():
            self.nonfinite_counts += bad
            row[bad] = 0.0
        np.clip(row, _LO, _HI, out=row)

        self._buf[self._head] = row
        self._head = (self._head + 1) % cfg.rows

        context = {
            "close": c,
            "bar_index": float(t),
            "volume_ratio": rho,
            "atr14": self._atr,
            "fvg_mitigated": 1.0 if fvg.mitigated else 0.0,
            "fvg_bull_mitigated": 1.0 if fvg.bull_mitigated else 0.0,
            "fvg_bear_mitigated": 1.0 if fvg.bear_mitigated else 0.0,
            "fvg_bull_mitigated_size": fvg.bull_mitigated_size,
            "fvg_bull_mitigated_level": fvg.bull_mitigated_level,
            "fvg_bear_mitigated_size": fvg.bear_mitigated_size,
            "fvg_bear_mitigated_level": fvg.bear_mitigated_level,
        }
        return FeatureMatrix(
            event_id=self.ids.next("TM"),
            ts_ns=bar.ts_ns,
            instrument_id=bar.instrument_id,
            kind="tactical",
            bar_id=bar.event_id,
            values=self.snapshot(),
            ready=t >= self.ready_from,
            context=context,
        )

    def snapshot(self) -> np.ndarray:
        """The matrix as it stands, oldest row first, as a read-only copy."""
        out = np.concatenate((self._buf[self._head:], self._buf[:self._head]))
        out.flags.writeable = False
        return out

    def _update_atr(self, h: float, l: float, c: float) -> None:
        if math.isnan(self._prev_close):
            tr = h - l
        else:
            pc = self._prev_close
            tr = max(h - l, abs(h - pc), abs(l - pc))
        self._prev_close = c
        if len(self._tr_seed) < ATR_PERIOD:
            self._tr_seed.append(tr)
            if len(self._tr_seed) == ATR_PERIOD:
                self._atr = math.fsum(self._tr_seed) / ATR_PERIOD
            return
        self._atr = (self._atr * (ATR_PERIOD - 1) + tr) / ATR_PERIOD
