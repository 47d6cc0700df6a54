"""MMD regime score (spec features.md 3.4): how far the last `test` bars' return/range distribution
sits from the `reference` bars before them.

Called once per closed 30-minute bar with C, H, L (float64); bar t counts from 0.
1. Per-bar vector `z_t = (r_t, ln(H_t / L_t))`, `r_t = ln(C_t / C_{t-1})`, defined from t = 1.
2. Test sample Y = `z_{t-test+1 .. t}` (48); reference X = `z_{t-test-reference+1 .. t-test}` (240, the
   five days before). Defined once test + reference vectors exist: t >= 288.
3. Standardize X and Y by X's per-dimension mean and population std (ddof 0, floored at 1e-8).
4. `sigma^2` = median of the squared distances of all unordered pairs i < j within X (even count: mean of
   the two middle values); `sigma = 1` if that is 0.
5. Gaussian kernel `k(a, b) = exp(-|a - b|^2 / (2 sigma^2))`; unbiased estimator
   `MMD2_u = sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(n(n-1))
             - 2 sum_{i,j} k(x_i,y_j)/(mn)`;
   score `= sqrt(max(0, MMD2_u))`, at most sqrt(2) (clipped). Y = X gives `MMD2_u = 2(A - 1)/m <= 0`.

A non-finite input (e.g. a non-positive price) propagates as nan; the assembler substitutes the
neutral value 0 and counts it. The pairwise work (m(m-1)/2 + n(n-1)/2 + mn kernel values, about 41k
with the defaults, plus the median) is the numba kernel `mmd2_unbiased` (built from `standardize`,
`median_sq_dist` (quickselect `mlmi.kth_smallest`) and `mmd2_fixed`).
"""

from __future__ import annotations

import math
from collections import deque

import msgspec
import numba
import numpy as np

from himari.daemon.configbase import check_range
from himari.daemon.matrices.mlmi import kth_smallest

STD_FLOOR = 1e-8
SCORE_MAX = math.sqrt(2.0)


class MmdConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    test: int = 48
    reference: int = 240

    def __post_init__(self) -> None:
        check_range("strategic.mmd.test", self.test, 2, 100_000)
        check_range("strategic.mmd.reference", self.reference, 2, 100_000)

    @property
    def valid_from(self) -> int:
        return self.test + self.reference


@numba.njit(cache=True)
def standardize(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 3: x and y scaled by x's per-column mean and population std (floored at 1e-8)."""
    m, dim = x.shape
    n = y.shape[0]
    xs = np.empty((m, dim))
    ys = np.empty((n, dim))
    for c in range(dim):
        mean = 0.0
        for i in range(m):
            mean += x[i, c]
        mean /= m
        var = 0.0
        for i in range(m):
            var += (x[i, c] - mean) ** 2
        sd = math.sqrt(var / m)
        if sd < STD_FLOOR:  # nan compares False and propagates through the values
            sd = STD_FLOOR
        for i in range(m):
            xs[i, c] = (x[i, c] - mean) / sd
        for i in range(n):
            ys[i, c] = (y[i, c] - mean) / sd
    return xs, ys


@numba.njit(cache=True)
def median_sq_dist(x: np.ndarray) -> float:
    """Step 4: median squared distance over the unordered pairs i < j of x's rows."""
    m, dim = x.shape
    d = np.empty(m * (m - 1) // 2)
    p = 0
    for i in range(m):
        for j in range(i + 1, m):
            s = 0.0
            for c in range(dim):
                s += (x[i, c] - x[j, c]) ** 2
            d[p] = s
            p += 1
    h = d.shape[0] // 2
    if d.shape[0] % 2:
        return kth_smallest(d, h)
    return 0.5 * (kth_smallest(d, h - 1) + kth_smallest(d, h))


@numba.njit(cache=True)
def _kernel_sum(a: np.ndarray, b: np.ndarray, inv: float, same: bool) -> float:
    """Sum of exp(-|a_i - b_j|^2 * inv) over all i, j, or over i < j when `same`."""
    total = 0.0
    dim = a.shape[1]
    for i in range(a.shape[0]):
        for j in range(i + 1 if same else 0, b.shape[0]):
            s = 0.0
            for c in range(dim):
                s += (a[i, c] - b[j, c]) ** 2
            total += math.exp(-s * inv)
    return total


@numba.njit(cache=True)
def mmd2_fixed(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Step 5: unbiased MMD^2 of x (m, d) and y (n, d) with a Gaussian kernel of width sigma."""
    m = x.shape[0]
    n = y.shape[0]
    inv = 1.0 / (2.0 * sigma * sigma)
    # The i < j sums doubled are the ordered sums over i != j.
    kxx = 2.0 * _kernel_sum(x, x, inv, True)
    kyy = 2.0 * _kernel_sum(y, y, inv, True)
    kxy = _kernel_sum(x, y, inv, False)
    return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2.0 * kxy / (m * n)


@numba.njit(cache=True)
def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(MMD2_u, sigma) for reference x (m, d) and test y (n, d), steps 3-5; m, n >= 2."""
    xs, ys = standardize(x, y)
    sigma2 = median_sq_dist(xs)
    if sigma2 == 0.0:
        sigma2 = 1.0
    sigma = math.sqrt(sigma2)
    return mmd2_fixed(xs, ys, sigma), sigma


def score(mmd2: float) -> float:
    """`sqrt(max(0, MMD2_u))` clipped to sqrt(2); nan stays nan."""
    if math.isnan(mmd2):
        return math.nan
    return min(math.sqrt(max(0.0, mmd2)), SCORE_MAX)


def warmup() -> None:
    x = np.array([[0.0, 1.0], [1.0, 0.5], [0.5, 0.2]])
    mmd2_unbiased(x, x[:2].copy())


class MmdState:
    """Rolling z vectors; `update` returns the score, nan until t >= test + reference."""

    def __init__(self, cfg: MmdConfig | None = None) -> None:
        self.cfg = cfg = cfg or MmdConfig()
        self._z: deque[tuple[float, float]] = deque(maxlen=cfg.test + cfg.reference)
        self._prev_close: float | None = None
        self.last_mmd2 = math.nan
        self.last_sigma = math.nan

    def update(self, close: float, high: float, low: float) -> float:
        prev = self._prev_close
        self._prev_close = close
        if prev is None:
            return math.nan
        self._z.append((_log_ratio(close, prev), _log_ratio(high, low)))
        cfg = self.cfg
        if len(self._z) < cfg.test + cfg.reference:
            return math.nan
        z = np.array(self._z, dtype=np.float64)
        mmd2, sigma = mmd2_unbiased(z[: cfg.reference], z[cfg.reference:])
        self.last_mmd2, self.last_sigma = mmd2, sigma
        return score(mmd2)


def _log_ratio(a: float, b: float) -> float:
    return math.log(a / b) if a > 0.0 and b > 0.0 else math.nan
