"""Volume profile, low-volume node (LVN) and profile skew (spec features.md 3.3).

Called once per closed 30-minute bar with its high H, low L, volume V and close C (float64); the
profile is rebuilt each bar from the last `window` (48) bars and is defined from t = window - 1 (47).

1. `lo = min L`, `hi = max H` over the window; if `hi <= lo` (or either is not finite): no LVN, skew 0.
2. `bins` (24) equal bins of width `w = (hi - lo) / bins`; bin k covers `[lo + k w, lo + (k+1) w)`,
   the last bin closed (its upper edge is exactly `hi`).
3. Each bar spreads V over `[L, H]` in proportion to its overlap with each bin; a bar with `H = L`
   puts all of V into the bin containing that price (`k = floor((p - lo) / w)`, clamped to the last).
4. POC = the bin with the largest volume `v_poc` (tie: the lower price). An LVN is an interior bin
   (not first or last) that is a strict local minimum, `v_{k-1} > v_k < v_{k+1}`, with
   `v_k < lvn_max_frac_of_poc * v_poc` (0.7); its price is the bin centre `lo + (k + 1/2) w`.
5. The LVN nearest to C (tie: the lower price) gives `d = 100 |C - p_lvn| / C` (%) and
   `strength = 1 - v_lvn / v_poc` in [0, 1]. Matrix columns: distance `min(1, d / max_distance_pct)`
   (2 %), 1 if no LVN; strength, 0 if no LVN.
6. Skew over bin centres c with weights v: `mu = sum(v c)/sum(v)`, `sd^2 = sum(v (c - mu)^2)/sum(v)`,
   `skew = sum(v (c - mu)^3) / (sum(v) sd^3)`; 0 if `sum(v) = 0` or `sd = 0`. Skewness is invariant
   under `c -> lo + (c + 1/2) w`, so it is computed on bin indices (exact small integers, so a profile
   in one bin gives sd exactly 0 rather than rounding noise); `sd < 1e-9` bin widths counts as 0.
   Matrix column `tanh(skew)`.

Zero volume everywhere gives no LVN (`v_k < 0.7 * 0` never holds) and skew 0. The binning (window x
bins overlaps per bar) is the numba kernel `profile_volume`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import msgspec
import numba
import numpy as np

from himari.daemon.configbase import check_range

SD_FLOOR_BINS = 1e-9


class ProfileConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    window: int = 48
    bins: int = 24
    lvn_max_frac_of_poc: float = 0.7
    max_distance_pct: float = 2.0

    def __post_init__(self) -> None:
        check_range("strategic.profile.window", self.window, 1, 100_000)
        check_range("strategic.profile.bins", self.bins, 3, 100_000)
        check_range("strategic.profile.lvn_max_frac_of_poc", self.lvn_max_frac_of_poc, 0.0, 1.0,
                    lo_open=True)
        check_range("strategic.profile.max_distance_pct", self.max_distance_pct, 0.0, 1e6,
                    lo_open=True)

    @property
    def valid_from(self) -> int:
        return self.window - 1


@numba.njit(cache=True)
def profile_volume(high: np.ndarray, low: np.ndarray, volume: np.ndarray, lo: float, hi: float,
                   nbins: int) -> np.ndarray:
    """Volume per bin (step 2-3); requires hi > lo and lo <= low <= high <= hi."""
    out = np.zeros(nbins)
    width = (hi - lo) / nbins
    for b in range(high.shape[0]):
        h = high[b]
        l = low[b]
        v = volume[b]
        if h <= l:
            k = int(math.floor((l - lo) / width))
            if k < 0:
                k = 0
            if k > nbins - 1:
                k = nbins - 1
            out[k] += v
            continue
        span = h - l
        k0 = int(math.floor((l - lo) / width))
        k1 = int(math.floor((h - lo) / width))
        if k0 < 0:
            k0 = 0
        if k1 > nbins - 1:
            k1 = nbins - 1
        # Rounding in floor() may misplace an edge by one bin: widen by one; zero overlaps add 0.
        if k0 > 0:
            k0 -= 1
        if k1 < nbins - 1:
            k1 += 1
        for k in range(k0, k1 + 1):
            e0 = lo + k * width
            e1 = hi if k == nbins - 1 else lo + (k + 1) * width
            ov = min(h, e1) - max(l, e0)
            if ov > 0.0:
                out[k] += v * ov / span
    return out


def warmup() -> None:
    profile_volume(np.array([2.0, 1.0]), np.array([1.0, 1.0]), np.array([1.0, 1.0]), 1.0, 2.0, 3)


class Lvn(NamedTuple):
    price: float
    strength: float
    distance_pct: float


def find_lvn(vols: np.ndarray, lo: float, width: float, close: float,
             max_frac: float) -> Lvn | None:
    """The LVN nearest to `close` (step 4-5), or None."""
    n = vols.shape[0]
    v_poc = float(vols.max()) if n else 0.0
    if not v_poc > 0.0:
        return None
    best: Lvn | None = None
    best_dist = math.inf
    for k in range(1, n - 1):  # ascending price: strict "<" keeps the lower price on ties
        v = vols[k]
        if vols[k - 1] > v < vols[k + 1] and v < max_frac * v_poc:
            price = lo + (k + 0.5) * width
            dist = abs(close - price)
            if dist < best_dist:
                best_dist = dist
                best = Lvn(price, 1.0 - float(v) / v_poc, math.nan)
    if best is None:
        return None
    d = 100.0 * best_dist / close if close > 0.0 else math.nan
    return Lvn(best.price, best.strength, d)


def bin_moments(vols: np.ndarray) -> tuple[float, float, float]:
    """(skew, mu, sd) with mu and sd in bin-index units (centre of bin k at k)."""
    total = float(vols.sum())
    if not total > 0.0:
        return 0.0, 0.0, 0.0
    k = np.arange(vols.shape[0], dtype=np.float64)
    mu = float((vols * k).sum()) / total
    dev = k - mu
    var = float((vols * dev * dev).sum()) / total
    sd = math.sqrt(var) if var > 0.0 else 0.0
    if sd < SD_FLOOR_BINS:
        return 0.0, mu, 0.0
    skew = float((vols * dev ** 3).sum()) / (total * sd ** 3)
    return skew, mu, sd


class ProfileOutput(NamedTuple):
    lvn: Lvn | None
    skew: float
    mu: float  # volume-weighted mean price (price units)
    sd: float  # volume-weighted std (price units)
    poc_price: float  # nan if no range
    distance_col: float  # min(1, d / max_distance_pct); 1 if no LVN
    strength_col: float  # 0 if no LVN
    skew_col: float  # tanh(skew)
    vols: np.ndarray


class VolumeProfileState:
    """Rolling profile of the last `window` bars; `update` returns None until the window is full."""

    def __init__(self, cfg: ProfileConfig | None = None) -> None:
        self.cfg = cfg = cfg or ProfileConfig()
        self._h: deque[float] = deque(maxlen=cfg.window)
        self._l: deque[float] = deque(maxlen=cfg.window)
        self._v: deque[float] = deque(maxlen=cfg.window)

    def update(self, high: float, low: float, volume: float, close: float) -> ProfileOutput | None:
        self._h.append(high)
        self._l.append(low)
        self._v.append(volume)
        if len(self._h) < self.cfg.window:
            return None
        return compute_profile(np.array(self._h), np.array(self._l), np.array(self._v), close,
                               self.cfg)


def compute_profile(high: np.ndarray, low: np.ndarray, volume: np.ndarray, close: float,
                    cfg: ProfileConfig) -> ProfileOutput:
    nb = cfg.bins
    lo = float(low.min())
    hi = float(high.max())
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        return ProfileOutput(None, 0.0, lo, 0.0, math.nan, 1.0, 0.0, 0.0, np.zeros(nb))
    vols = profile_volume(high, low, volume, lo, hi, nb)
    width = (hi - lo) / nb
    lvn = find_lvn(vols, lo, width, close, cfg.lvn_max_frac_of_poc)
    skew, mu_k, sd_k = bin_moments(vols)
    poc = lo + (int(np.argmax(vols)) + 0.5) * width
    if lvn is None:
        dist_col, strength_col = 1.0, 0.0
    else:
        dist_col, strength_col = min(1.0, lvn.distance_pct / cfg.max_distance_pct), lvn.strength
    return ProfileOutput(lvn, skew, lo + (mu_k + 0.5) * width, sd_k * width, poc, dist_col,
                         strength_col, math.tanh(skew), vols)
