"""The decision engine's shared 257-value feature vector x (spec decision.md 4.0), numpy only.

Layout (decision/layout.py): slot 0 target Sharpe (D9); 1-140 the last 20 rows of the tactical
60x7 matrix, oldest first, row-major; 141-244 the last 8 rows of the strategic 48x13 matrix; 245-248
regime one-hot (crisis, bearish, neutral, bullish); 249-252 position state; 253-256 time.

Position state (raw `PositionState`, turned into slots here):
- sign of the position (-1, 0, +1);
- unrealised PnL / ATR(14): (close - entry) x sign / ATR14, 0 when flat or ATR14 <= 0, clipped to
  [-20, 20] (an ATR of 0 in a quiet warm-up must not give inf);
- bars in position / 100, capped at 1;
- drawdown buffer = 1 - drawdown / max_drawdown_limit, clipped to [0, 1]: 1 = no drawdown, 0 = at
  or past the limit (spec 6.10's "remaining distance to the drawdown limit as a fraction of it").
Time: hour of day h = (seconds since UTC midnight) / 3600 (fractional), sin/cos(2 pi h / 24);
weekday d (Monday 0) from the UTC day, sin/cos(2 pi d / 7). Event time (the bar's ts_ns), never the
wall clock.

`feature_vector` (one decision, a few microseconds) and `feature_matrix` (training, over a
BarDataset) run the same Numba row kernel, so their rows are bit-identical (a test checks it).
Values are float32.
`FeatureStats` z-scores with training statistics; one-hot and sin/cos slots (layout.UNSCALED) pass
through unchanged; std is floored at `STD_FLOOR` and z-scores clipped to +-`Z_CLIP` (an extreme
live value must not saturate a network far outside anything it trained on).

`strategic_inputs` builds the strategic agents' inputs (spec 3.1): per agent the column means over
the 48 rows of its column group, followed by the 6 shared context values.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from himari.decision import layout as L

DAY_NS = 86_400_000_000_000
HOUR_NS = 3_600_000_000_000
STD_FLOOR = 1e-3
Z_CLIP = 10.0
UPNL_CLIP = 20.0
STRATEGIC_NEUTRAL = np.zeros(L.STRATEGIC_COLS, np.float32)
STRATEGIC_NEUTRAL[4] = 1.0  # lvn_distance: "no LVN = far" (features.md 3)


class PositionState(NamedTuple):
    """Raw position state; `feature_vector` applies the caps and clips of the module docstring."""

    sign: float = 0.0
    upnl_atr: float = 0.0          # (close - entry) x sign / ATR14
    bars_in_position: float = 0.0  # bars since the position was opened
    drawdown_buffer: float = 1.0   # 1 - drawdown / max_drawdown_limit

    @staticmethod
    def of(position: int, entry_price: float, close: float, atr14: float, bars_in_position: int,
           drawdown: float, max_drawdown: float) -> PositionState:
        """From the portfolio: drawdown and its limit as fractions of equity (e.g. 0.02, 0.05)."""
        sign = float(np.sign(position))
        upnl = (close - entry_price) * sign / atr14 if sign != 0 and atr14 > 0 else 0.0
        buffer = 1.0 - drawdown / max_drawdown if max_drawdown > 0 else 1.0
        return PositionState(sign, upnl, float(bars_in_position) if sign != 0 else 0.0, buffer)


FLAT = PositionState()


def position_slots(p: np.ndarray) -> np.ndarray:
    """Raw PositionState values (..., 4) -> the 4 slot values (float64): sign, clipped PnL/ATR,
    bars / 100 capped at 1, buffer clipped to [0, 1]."""
    p = np.asarray(p, np.float64)
    out = np.empty(p.shape)
    out[..., 0] = np.sign(p[..., 0])
    out[..., 1] = np.clip(p[..., 1], -UPNL_CLIP, UPNL_CLIP)
    out[..., 2] = np.minimum(np.maximum(p[..., 2], 0.0) / 100.0, 1.0)
    out[..., 3] = np.clip(p[..., 3], 0.0, 1.0)
    return out


@njit(cache=True)
def _row(out: np.ndarray, tac: np.ndarray, t_end: int, strat: np.ndarray, s_end: int,
         regime: int, target: float, p: np.ndarray, ts: int) -> int:
    """One x into out (257,) float32 from the 20 tactical rows ending at row t_end of `tac` and
    the 8 strategic rows ending at s_end of `strat` (inclusive). Returns 0, or an error code:
    1 tactical, 2 strategic, 3 position, 4 target Sharpe non-finite, 5 regime out of range.
    Both feature_vector and feature_matrix run this code, so their rows are bit-identical."""
    if regime < 0 or regime >= 4:
        return 5
    if not np.isfinite(target):
        return 4
    out[0] = target
    k = 1
    for i in range(t_end - 19, t_end + 1):
        for j in range(7):
            v = tac[i, j]
            if not np.isfinite(v):
                return 1
            out[k] = v
            k += 1
    for i in range(s_end - 7, s_end + 1):
        for j in range(13):
            v = strat[i, j]
            if not np.isfinite(v):
                return 2
            out[k] = v
            k += 1
    for j in range(4):
        out[245 + j] = 1.0 if j == regime else 0.0
    for j in range(4):
        if not np.isfinite(p[j]):
            return 3
    sign = p[0]
    out[249] = 1.0 if sign > 0 else (-1.0 if sign < 0 else 0.0)
    out[250] = min(max(p[1], -UPNL_CLIP), UPNL_CLIP)
    out[251] = min(max(p[2], 0.0) / 100.0, 1.0)
    out[252] = min(max(p[3], 0.0), 1.0)
    a_h = (float(ts % DAY_NS) / HOUR_NS) * (2.0 * math.pi / 24.0)
    a_d = float((ts // DAY_NS + 3) % 7) * (2.0 * math.pi / 7.0)  # 1970-01-01 was a Thursday
    out[253] = math.sin(a_h)
    out[254] = math.cos(a_h)
    out[255] = math.sin(a_d)
    out[256] = math.cos(a_d)
    return 0


@njit(cache=True)
def _rows(out: np.ndarray, tac_rows: np.ndarray, tac_index: np.ndarray, strat_rows: np.ndarray,
          strat_index: np.ndarray, idx: np.ndarray, regime: np.ndarray, target: np.ndarray,
          pos: np.ndarray, ts: np.ndarray) -> tuple[int, int]:
    for r in range(len(idx)):
        b = idx[r]
        code = _row(out[r], tac_rows, tac_index[b], strat_rows, strat_index[b], regime[r],
                    target[r], pos[r], ts[b])
        if code != 0:
            return r, code
    return -1, 0


@njit(cache=True)
def _first_nonfinite(a: np.ndarray) -> int:
    flat = a.ravel()
    for i in range(flat.size):
        if not np.isfinite(flat[i]):
            return i
    return -1


_CODES = {1: "tactical rows", 2: "strategic rows", 3: "position state", 4: "target Sharpe",
          5: "regime (must be 0..3)"}


def _matrix(name: str, a: Any, rows: int, cols: int) -> np.ndarray:
    if type(a) is not np.ndarray or a.dtype != np.float32 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=np.float32)
    if a.shape != (rows, cols):
        raise ValueError(f"{name} has shape {a.shape}, expected {(rows, cols)}")
    bad = _first_nonfinite(a)
    if bad >= 0:
        at = [bad // cols, bad % cols]
        raise ValueError(f"{name} has a non-finite value at {at}: {a.ravel()[bad]!r}")
    return a


_NEUTRAL_TAIL = np.ascontiguousarray(np.tile(STRATEGIC_NEUTRAL, (L.STRATEGIC_TAIL_ROWS, 1)))


def feature_vector(tactical: Any, strategic: Any, regime: int, target_sharpe: float | None,
                   position_state: Any, ts_ns: int, out: np.ndarray | None = None) -> np.ndarray:
    """Raw x (257,) float32 for one decision. `strategic` None -> the neutral matrix; target
    Sharpe None -> layout.TARGET_SHARPE[regime]. Non-finite or wrong-shaped input: ValueError."""
    tac = _matrix("tactical matrix", tactical, L.TACTICAL_ROWS, L.TACTICAL_COLS)
    if strategic is None:
        strat = _NEUTRAL_TAIL
    else:
        strat = _matrix("strategic matrix", strategic, L.STRATEGIC_ROWS, L.STRATEGIC_COLS)
    regime = int(regime)
    if target_sharpe is None:
        if not 0 <= regime < len(L.TARGET_SHARPE):
            raise ValueError(f"regime must be in 0..{len(L.REGIMES) - 1}, got {regime}")
        target_sharpe = L.TARGET_SHARPE[regime]
    pos = np.asarray(position_state, np.float64)
    if pos.shape != (4,):
        raise ValueError(f"position_state has shape {pos.shape}, expected (4,)")
    if out is None:
        out = np.empty(L.FEATURE_DIM, np.float32)
    elif out.shape != (L.FEATURE_DIM,) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 ({L.FEATURE_DIM},), got {out.dtype} {out.shape}")
    code = _row(out, tac, L.TACTICAL_ROWS - 1, strat, len(strat) - 1, regime,
                float(target_sharpe), pos, int(ts_ns))
    if code:
        what = {3: f"position_state {pos.tolist()}", 4: f"target_sharpe {target_sharpe!r}",
                5: f"regime {regime}"}.get(code, _CODES[code])
        raise ValueError(f"feature_vector: invalid {what}")
    return out


def _tables(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row tables and newest-row indices of a BarDataset; an object with plain (N, 60, 7) /
    (N, 48, 13) `tactical` / `strategic` arrays is viewed the same way (test fixtures)."""
    if hasattr(ds, "tac_rows"):
        return (np.ascontiguousarray(ds.tac_rows, np.float32),
                np.ascontiguousarray(ds.tac_index, np.int64),
                np.ascontiguousarray(ds.strat_rows, np.float32),
                np.ascontiguousarray(ds.strat_index, np.int64))
    out = []
    for a, rows, cols in ((ds.tactical, L.TACTICAL_ROWS, L.TACTICAL_COLS),
                          (ds.strategic, L.STRATEGIC_ROWS, L.STRATEGIC_COLS)):
        a = np.ascontiguousarray(a, np.float32)
        if a.ndim != 3 or a.shape[1:] != (rows, cols):
            raise ValueError(f"dataset matrices have shape {a.shape}, expected (N, {rows}, {cols})")
        out += [a.reshape(-1, cols), np.arange(len(a), dtype=np.int64) * rows + rows - 1]
    return out[0], out[1], out[2], out[3]


def feature_matrix(ds: Any, index: Any = None, *, regime: Any = L.DEFAULT_REGIME,
                   target_sharpe: Any = None, position: np.ndarray | None = None) -> np.ndarray:
    """Raw x rows (n, 257) float32 for the bars `index` of a BarDataset (all when None).
    regime: scalar or (n,); target_sharpe: None (from regime), scalar or (n,); position: (n, 4)
    raw PositionState rows or None (flat). Row i equals feature_vector on bar index[i]."""
    idx = np.arange(len(ds)) if index is None else np.asarray(index)
    if idx.dtype == np.bool_:
        idx = np.flatnonzero(idx)
    idx = np.ascontiguousarray(idx, np.int64)
    n = len(idx)
    r = np.ascontiguousarray(np.broadcast_to(np.asarray(regime, np.int64), (n,)))
    if n and (r.min() < 0 or r.max() >= len(L.REGIMES)):
        raise ValueError(f"regime must be in 0..{len(L.REGIMES) - 1}, got {np.unique(r).tolist()}")
    if target_sharpe is None:
        target = np.asarray(L.TARGET_SHARPE, np.float64)[r]
    else:
        target = np.ascontiguousarray(np.broadcast_to(np.asarray(target_sharpe, np.float64), (n,)))
    pos = np.broadcast_to(np.asarray(FLAT, np.float64), (n, 4)) if position is None \
        else np.asarray(position, np.float64)
    if pos.shape != (n, 4):
        raise ValueError(f"position has shape {pos.shape}, expected ({n}, 4)")
    pos = np.ascontiguousarray(pos)
    out = np.empty((n, L.FEATURE_DIM), np.float32)
    tables = _tables(ds)
    row, code = _rows(out, *tables, idx, r, target, pos, np.ascontiguousarray(ds.ts_ns, np.int64))
    if code:
        raise ValueError(f"feature_matrix: non-finite {_CODES[code]} at bar {int(idx[row])}")
    return out


def unscaled_mask(dim: int = L.FEATURE_DIM) -> np.ndarray:
    mask = np.zeros(dim, bool)
    if dim == L.FEATURE_DIM:
        for s in L.UNSCALED:
            mask[s] = True
    return mask


class FeatureStats:
    """z-score statistics from training data; unscaled slots carry mean 0, std 1 (exact no-op)."""

    def __init__(self, mean: Any, std: Any, unscaled: np.ndarray | None = None) -> None:
        mean = np.asarray(mean, np.float32).copy()
        std = np.maximum(np.asarray(std, np.float32), np.float32(STD_FLOOR))
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(f"FeatureStats mean {mean.shape} and std {std.shape} must be equal 1-D")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("FeatureStats has non-finite mean or std")
        mask = unscaled_mask(len(mean)) if unscaled is None else np.asarray(unscaled, bool)
        mean[mask] = 0.0
        std[mask] = 1.0
        self.mean, self.std = mean, std
        self.inv = (np.float32(1.0) / std).astype(np.float32)
        self.hi = np.where(mask, np.inf, Z_CLIP).astype(np.float32)  # unscaled: not clipped
        self.lo = -self.hi

    def normalize(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(x - mean) / std, z-scores clipped to +-Z_CLIP, float32; works on (dim,) and (n, dim)."""
        if np.shape(x)[-1] != len(self.mean):
            raise ValueError(f"normalize: x has {np.shape(x)[-1]} values, stats have "
                             f"{len(self.mean)}")
        out = np.subtract(x, self.mean, out=out, dtype=np.float32)
        np.multiply(out, self.inv, out=out)
        return np.clip(out, self.lo, self.hi, out=out)

    def to_tensors(self, prefix: str = "x") -> dict[str, np.ndarray]:
        return {f"{prefix}_mean": self.mean, f"{prefix}_std": self.std}

    @staticmethod
    def from_tensors(tensors: dict[str, np.ndarray], prefix: str = "x") -> FeatureStats:
        try:
            return FeatureStats(tensors[f"{prefix}_mean"], tensors[f"{prefix}_std"])
        except KeyError as exc:
            raise ValueError(f"feature statistics {exc.args[0]!r} missing from the checkpoint") \
                from None


def fit_stats(X: np.ndarray, unscaled: np.ndarray | None = None) -> FeatureStats:
    """Mean and std per column of training rows X (n, dim), in float64."""
    X = np.asarray(X)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"fit_stats needs (n >= 2, dim) rows, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("fit_stats: X has non-finite values")
    return FeatureStats(X.mean(axis=0, dtype=np.float64), X.std(axis=0, dtype=np.float64),
                        unscaled)


# ---- strategic agents' inputs (spec 3.1)


def _synergy_parts(synergy: Any) -> tuple[float, float]:
    """(confidence, direction) from None, a SynergyDetected-like object or (direction, conf)."""
    if synergy is None:
        return 0.0, 0.0
    if hasattr(synergy, "confidence"):
        return float(synergy.confidence), float(synergy.direction)
    direction, conf = synergy
    return float(conf), float(direction)


@njit(cache=True)
def _strategic_row(strat: np.ndarray, conf: float, direction: float, ts: int, m: np.ndarray,
                   w: np.ndarray, r: np.ndarray) -> None:
    """Group column means over the 48 rows (float64, summed in row order) + the 6 context values:
    synergy confidence, direction, ln(volatility_30) = atanh(column 11 of the newest row, which is
    tanh(ln v_rel); 0 = volatility 1.0 while not yet valid), sin/cos(2 pi hour / 24), weekday / 6."""
    rows = strat.shape[0]
    means = np.zeros(13)
    for i in range(rows):
        for j in range(13):
            means[j] += strat[i, j]
    for j in range(13):
        means[j] /= rows
    c11 = min(max(float(strat[rows - 1, 11]), -0.999999), 0.999999)
    a_h = (float(ts % DAY_NS) / HOUR_NS) * (2.0 * math.pi / 24.0)
    ctx = (conf, direction, math.atanh(c11), math.sin(a_h), math.cos(a_h),
           float((ts // DAY_NS + 3) % 7) / 6.0)
    m[0], m[1], m[2], m[3] = means[0], means[1], means[8], means[9]
    w[0], w[1], w[2], w[3] = means[2], means[3], means[4], means[5]
    r[0], r[1], r[2] = means[10], means[11], means[12]
    for k in range(6):
        m[4 + k] = ctx[k]
        w[4 + k] = ctx[k]
        r[3 + k] = ctx[k]


@njit(cache=True)
def _strategic_rows(strat: np.ndarray, conf: np.ndarray, direction: np.ndarray, ts: np.ndarray,
                    m: np.ndarray, w: np.ndarray, r: np.ndarray) -> None:
    for i in range(strat.shape[0]):
        _strategic_row(strat[i], conf[i], direction[i], ts[i], m[i], w[i], r[i])


def strategic_inputs_batch(strat: Any, syn_conf: Any, syn_dir: Any,
                           ts_ns: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised `strategic_inputs` over (n, 48, 13) matrices: (n, 10), (n, 10), (n, 9) float32
    (same kernel as the single call, so equal bit for bit)."""
    strat = np.ascontiguousarray(strat, np.float32)
    if strat.ndim != 3 or strat.shape[1:] != (L.STRATEGIC_ROWS, L.STRATEGIC_COLS):
        raise ValueError(f"strategic matrices have shape {strat.shape}, expected (n, 48, 13)")
    n = strat.shape[0]

    def vec(a: Any, dt: Any) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(a, dt), (n,)))

    m = np.empty((n, 10), np.float32)
    w = np.empty((n, 10), np.float32)
    r = np.empty((n, 9), np.float32)
    _strategic_rows(strat, vec(syn_conf, np.float64), vec(syn_dir, np.float64),
                    vec(ts_ns, np.int64), m, w, r)
    return m, w, r


def strategic_inputs(strategic: Any, synergy: Any, ts_ns: int) -> tuple[np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """(mlmi (10,), nwrqk (10,), regime (9,)) float32 for one 48x13 matrix."""
    strat = _matrix("strategic matrix", strategic, L.STRATEGIC_ROWS, L.STRATEGIC_COLS)
    conf, direction = _synergy_parts(synergy)
    if not (math.isfinite(conf) and math.isfinite(direction)):
        raise ValueError(f"synergy confidence/direction not finite: {conf!r}, {direction!r}")
    m = np.empty(10, np.float32)
    w = np.empty(10, np.float32)
    r = np.empty(9, np.float32)
    _strategic_row(strat, conf, direction, int(ts_ns), m, w, r)
    return m, w, r
