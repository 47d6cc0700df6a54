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

`feature_vector` (one decision) and `feature_matrix` (training, vectorised over a BarDataset) share
one assembly routine, so their rows are bit-identical (a test checks it). Values are float32.
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


def _check(name: str, a: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise ValueError(f"{name} has a non-finite value at {bad}: {arr[tuple(bad)]!r}")
    return arr


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


def _assemble(out: np.ndarray, tac_tail: np.ndarray, strat_tail: np.ndarray, regime: np.ndarray,
              target: np.ndarray, pos: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
    """Fill out (n, 257) float32 from (n, 20, 7), (n, 8, 13), (n,), (n,), (n, 4), (n,) int64."""
    n = out.shape[0]
    out[:, L.X_TARGET_SHARPE] = target.reshape(n, 1)
    out[:, L.X_TACTICAL] = tac_tail.reshape(n, -1)
    out[:, L.X_STRATEGIC] = strat_tail.reshape(n, -1)
    onehot = out[:, L.X_REGIME]
    onehot[:] = 0.0
    onehot[np.arange(n), regime] = 1.0
    out[:, L.X_POSITION] = position_slots(np.asarray(pos, np.float64).reshape(n, 4))
    ts = np.asarray(ts_ns, np.int64)
    hour = (ts % DAY_NS).astype(np.float64) / HOUR_NS
    a_h = hour * (2.0 * math.pi / 24.0)
    a_d = ((ts // DAY_NS + 3) % 7).astype(np.float64) * (2.0 * math.pi / 7.0)  # 1970-01-01: Thu
    tm = out[:, L.X_TIME]
    tm[:, 0] = np.sin(a_h)
    tm[:, 1] = np.cos(a_h)
    tm[:, 2] = np.sin(a_d)
    tm[:, 3] = np.cos(a_d)
    return out


def _regime_array(regime: Any, n: int) -> np.ndarray:
    r = np.broadcast_to(np.asarray(regime, np.int64), (n,))
    if n and (r.min() < 0 or r.max() >= len(L.REGIMES)):
        raise ValueError(f"regime must be in 0..{len(L.REGIMES) - 1}, got {np.unique(r).tolist()}")
    return r


def feature_vector(tactical: Any, strategic: Any, regime: int, target_sharpe: float | None,
                   position_state: Any, ts_ns: int, out: np.ndarray | None = None) -> np.ndarray:
    """Raw x (257,) float32 for one decision. `strategic` None -> the neutral matrix; target
    Sharpe None -> layout.TARGET_SHARPE[regime]. Non-finite or wrong-shaped input: ValueError."""
    tac = _check("tactical matrix", tactical, (L.TACTICAL_ROWS, L.TACTICAL_COLS))
    if strategic is None:
        strat_tail = np.broadcast_to(STRATEGIC_NEUTRAL, (L.STRATEGIC_TAIL_ROWS, L.STRATEGIC_COLS))
    else:
        strat_tail = _check("strategic matrix", strategic,
                            (L.STRATEGIC_ROWS, L.STRATEGIC_COLS))[-L.STRATEGIC_TAIL_ROWS:]
    r = _regime_array(regime, 1)
    if target_sharpe is None:
        target_sharpe = L.TARGET_SHARPE[int(r[0])]
    pos = _check("position_state", np.asarray(position_state, np.float64), (4,))
    if not math.isfinite(target_sharpe):
        raise ValueError(f"target_sharpe is not finite: {target_sharpe!r}")
    if out is None:
        out = np.empty(L.FEATURE_DIM, np.float32)
    elif out.shape != (L.FEATURE_DIM,) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 ({L.FEATURE_DIM},), got {out.dtype} {out.shape}")
    _assemble(out.reshape(1, -1), tac[None, -L.TACTICAL_TAIL_ROWS:], strat_tail[None], r,
              np.asarray([target_sharpe], np.float64), pos[None], np.asarray([ts_ns], np.int64))
    return out


def feature_matrix(ds: Any, index: Any = None, *, regime: Any = L.DEFAULT_REGIME,
                   target_sharpe: Any = None, position: np.ndarray | None = None) -> np.ndarray:
    """Raw x rows (n, 257) float32 for the bars `index` of a BarDataset (all when None).
    regime: scalar or (n,); target_sharpe: None (from regime), scalar or (n,); position: (n, 4)
    raw PositionState rows or None (flat). Row i equals feature_vector on bar index[i]."""
    idx = np.arange(len(ds)) if index is None else np.asarray(index)
    if idx.dtype == np.bool_:
        idx = np.flatnonzero(idx)
    n = len(idx)
    r = _regime_array(regime, n)
    if target_sharpe is None:
        target = np.asarray(L.TARGET_SHARPE, np.float64)[r]
    else:
        target = np.broadcast_to(np.asarray(target_sharpe, np.float64), (n,))
    pos = np.broadcast_to(np.asarray(FLAT, np.float64), (n, 4)) if position is None \
        else np.asarray(position, np.float64)
    if pos.shape != (n, 4):
        raise ValueError(f"position has shape {pos.shape}, expected ({n}, 4)")
    tac_tail = ds.tactical.tail(idx, L.TACTICAL_TAIL_ROWS)
    strat_tail = ds.strategic.tail(idx, L.STRATEGIC_TAIL_ROWS)
    for name, a in (("tactical rows", tac_tail), ("strategic rows", strat_tail),
                    ("position", pos), ("target_sharpe", target)):
        if not np.isfinite(a).all():
            raise ValueError(f"feature_matrix: non-finite {name}")
    out = np.empty((n, L.FEATURE_DIM), np.float32)
    return _assemble(out, tac_tail, strat_tail, r, target, pos, np.asarray(ds.ts_ns)[idx])


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
        self._inv = (np.float32(1.0) / std).astype(np.float32)
        self._hi = np.where(mask, np.inf, Z_CLIP).astype(np.float32)  # unscaled: not clipped
        self._lo = -self._hi

    def normalize(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(x - mean) / std, z-scores clipped to +-Z_CLIP, float32; works on (dim,) and (n, dim)."""
        if np.shape(x)[-1] != len(self.mean):
            raise ValueError(f"normalize: x has {np.shape(x)[-1]} values, stats have "
                             f"{len(self.mean)}")
        out = np.subtract(x, self.mean, out=out, dtype=np.float32)
        np.multiply(out, self._inv, out=out)
        return np.clip(out, self._lo, self._hi, out=out)

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


def strategic_context(strat: np.ndarray, syn_conf: np.ndarray, syn_dir: np.ndarray,
                      ts_ns: np.ndarray) -> np.ndarray:
    """(n, 6): synergy confidence, direction, ln(volatility_30), sin/cos hour, weekday / 6.
    ln(volatility_30) = atanh(column 11 of the newest row), which is ln(v_rel) (features.md 3;
    0 = volatility 1.0 while not yet valid)."""
    n = len(ts_ns)
    ctx = np.empty((n, L.STRATEGIC_CONTEXT_DIM), np.float64)
    ctx[:, 0] = syn_conf
    ctx[:, 1] = syn_dir
    c11 = np.clip(strat[:, -1, 11].astype(np.float64), -0.999999, 0.999999)
    ctx[:, 2] = np.arctanh(c11)
    ts = np.asarray(ts_ns, np.int64)
    a_h = ((ts % DAY_NS).astype(np.float64) / HOUR_NS) * (2.0 * math.pi / 24.0)
    ctx[:, 3] = np.sin(a_h)
    ctx[:, 4] = np.cos(a_h)
    ctx[:, 5] = ((ts // DAY_NS + 3) % 7).astype(np.float64) / 6.0
    return ctx


def strategic_inputs_batch(strat: np.ndarray, syn_conf: Any, syn_dir: Any,
                           ts_ns: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised `strategic_inputs` over (n, 48, 13) matrices: (n, 10), (n, 10), (n, 9)."""
    strat = np.asarray(strat)
    n = strat.shape[0]
    means = strat.mean(axis=1, dtype=np.float64)
    ctx = strategic_context(strat, np.broadcast_to(np.asarray(syn_conf, np.float64), (n,)),
                            np.broadcast_to(np.asarray(syn_dir, np.float64), (n,)),
                            np.broadcast_to(np.asarray(ts_ns, np.int64), (n,)))
    parts = []
    for cols in (L.MLMI_COLS, L.NWRQK_COLS, L.REGIME_COLS):
        parts.append(np.concatenate([means[:, list(cols)], ctx], axis=1).astype(np.float32))
    return parts[0], parts[1], parts[2]


def strategic_inputs(strategic: Any, synergy: Any, ts_ns: int) -> tuple[np.ndarray, np.ndarray,
                                                                         np.ndarray]:
    """(mlmi (10,), nwrqk (10,), regime (9,)) float32 for one 48x13 matrix."""
    strat = _check("strategic matrix", strategic, (L.STRATEGIC_ROWS, L.STRATEGIC_COLS))
    conf, direction = _synergy_parts(synergy)
    if not (math.isfinite(conf) and math.isfinite(direction)):
        raise ValueError(f"synergy confidence/direction not finite: {conf!r}, {direction!r}")
    m, w, r = strategic_inputs_batch(strat[None], conf, direction, ts_ns)
    return m[0], w[0], r[0]
