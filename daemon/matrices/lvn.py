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
bins overlaps per bar) is the numba kernel `profile_volume`. `compute_profile` (with `find_lvn`,
`bin_moments`) is the plain reference; the rolling state keeps H, L, V twice in rings of 2 x window
(the last `window` bars are one slice) and runs all of steps 1-6 in the kernel `profile_stats`, the
same arithmetic in the same order (numpy's pairwise summation replayed by `np_sum`). Its output equals
`compute_profile`'s bit for bit except the skew: the reference's `dev ** 3` is numpy's `power`, which
on some CPUs (AVX-512) takes a SIMD path one ulp away from the kernel's `math.pow`, so the skew agrees
to round-off (about 1e-15 of its scale), not bit for bit.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from himari.daemon.matrices.config import ProfileConfig

SD_FLOOR_BINS = 1e-9


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


@numba.njit(cache=True)
def _pairwise_sum(a: np.ndarray) -> float:
    """numpy's pairwise summation of a contiguous float64 block (`DOUBLE_pairwise_sum`)."""
    n = a.shape[0]
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
        r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
        i = 8
        while i < n - n % 8:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a[:n2]) + _pairwise_sum(a[n2:])


@numba.njit(cache=True)
def np_sum(a: np.ndarray) -> float:
    """`float(a.sum())` for a contiguous 1-D float64 array, bit for bit (identity 0, then pairwise)."""
    return 0.0 + _pairwise_sum(a)


@numba.njit(cache=True)
def profile_stats(high: np.ndarray, low: np.ndarray, volume: np.ndarray, close: float, nbins: int,
                  max_frac: float) -> tuple[bool, float, float, np.ndarray, int, float, float,
                                            float, float, float, int]:
    """Steps 1-6 as `compute_profile`: (ok, lo, hi, vols, lvn bin or -1, lvn strength, lvn distance %,
    skew, mu and sd in bin units, POC bin); ok False when the range is empty or not finite."""
    lo = low[0]
    hi = high[0]
    for i in range(1, low.shape[0]):  # as numpy's min/max, a nan sticks
        if lo == lo and not low[i] >= lo:
            lo = low[i]
        if hi == hi and not high[i] <= hi:
            hi = high[i]
    if not (abs(lo) < np.inf and abs(hi) < np.inf and hi > lo):
        return False, lo, hi, np.zeros(nbins), -1, 0.0, 0.0, 0.0, 0.0, 0.0, -1
    vols = profile_volume(high, low, volume, lo, hi, nbins)
    width = (hi - lo) / nbins

    # Steps 4-5, as find_lvn.
    v_poc = vols[0]
    poc_k = 0
    for k in range(1, nbins):
        if vols[k] > v_poc:
            v_poc = vols[k]
            poc_k = k
    lvn_k = -1
    strength = 0.0
    dist_pct = 0.0
    if v_poc > 0.0:
        best = np.inf
        for k in range(1, nbins - 1):
            v = vols[k]
            if vols[k - 1] > v and v < vols[k + 1] and v < max_frac * v_poc:
                dist = abs(close - (lo + (k + 0.5) * width))
                if dist < best:
                    best = dist
                    lvn_k = k
                    strength = 1.0 - v / v_poc
        if lvn_k >= 0:
            dist_pct = 100.0 * best / close if close > 0.0 else np.nan

    # Step 6, as bin_moments.
    skew = 0.0
    mu = 0.0
    sd = 0.0
    total = np_sum(vols)
    if total > 0.0:
        tmp = np.empty(nbins)
        for k in range(nbins):
            tmp[k] = vols[k] * k
        mu = np_sum(tmp) / total
        for k in range(nbins):
            dev = k - mu
            tmp[k] = vols[k] * dev * dev
        var = np_sum(tmp) / total
        sd = math.sqrt(var) if var > 0.0 else 0.0
        if sd < SD_FLOOR_BINS:
            sd = 0.0
        else:
            for k in range(nbins):
                tmp[k] = vols[k] * math.pow(k - mu, 3.0)
            skew = np_sum(tmp) / (total * math.pow(sd, 3.0))
    return True, lo, hi, vols, lvn_k, strength, dist_pct, skew, mu, sd, poc_k


@numba.njit(cache=True)
def _push3(hb: np.ndarray, lb: np.ndarray, vb: np.ndarray, head: int, w: int, high: float,
           low: float, volume: float) -> None:
    hb[head] = high
    hb[head + w] = high
    lb[head] = low
    lb[head + w] = low
    vb[head] = volume
    vb[head + w] = volume


@numba.njit(cache=True)
def profile_push(hb: np.ndarray, lb: np.ndarray, vb: np.ndarray, head: int, w: int, high: float,
                 low: float, volume: float, close: float, nbins: int, max_frac: float
                 ) -> tuple[bool, float, float, np.ndarray, int, float, float, float, float, float,
                            int]:
    """Write the bar at ring slot `head`, then `profile_stats` over the last w bars."""
    _push3(hb, lb, vb, head, w, high, low, volume)
    s = head + 1
    return profile_stats(hb[s:s + w], lb[s:s + w], vb[s:s + w], close, nbins, max_frac)


def warmup() -> None:
    profile_volume(np.array([2.0, 1.0]), np.array([1.0, 1.0]), np.array([1.0, 1.0]), 1.0, 2.0, 3)
    b = np.zeros(4)
    _push3(b, b.copy(), b.copy(), 0, 2, 1.0, 1.0, 1.0)
    profile_push(np.array([2.0, 1.0, 2.0, 1.0]), np.ones(4), np.ones(4), 0, 2, 2.0, 1.0, 1.0, 1.5,
                 3, 0.7)


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
        w = cfg.window
        self._h = np.zeros(2 * w)  # each bar at slots i and i + w: the window is [head, head + w)
        self._l = np.zeros(2 * w)
        self._v = np.zeros(2 * w)
        self._head = 0
        self._count = 0

    def update(self, high: float, low: float, volume: float, close: float) -> ProfileOutput | None:
        cfg = self.cfg
        w, head = cfg.window, self._head
        self._head = (head + 1) % w
        if self._count < w - 1:
            self._count += 1
            _push3(self._h, self._l, self._v, head, w, high, low, volume)
            return None
        ok, lo, hi, vols, lvn_k, strength, dist_pct, skew, mu_k, sd_k, poc_k = profile_push(
            self._h, self._l, self._v, head, w, high, low, volume, close, cfg.bins,
            cfg.lvn_max_frac_of_poc)
        if not ok:
            return ProfileOutput(None, 0.0, lo, 0.0, math.nan, 1.0, 0.0, 0.0, vols)
        width = (hi - lo) / cfg.bins
        if lvn_k < 0:
            lvn = None
            dist_col, strength_col = 1.0, 0.0
        else:
            lvn = Lvn(lo + (lvn_k + 0.5) * width, strength, dist_pct)
            dist_col, strength_col = min(1.0, dist_pct / cfg.max_distance_pct), strength
        return ProfileOutput(lvn, skew, lo + (mu_k + 0.5) * width, sd_k * width,
                             lo + (poc_k + 0.5) * width, dist_col, strength_col, math.tanh(skew),
                             vols)


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
