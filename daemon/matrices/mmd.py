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
neutral value 0 and counts it.

Kernels. `mmd2_unbiased` (with `standardize`, `median_sq_dist`, `mmd2_fixed`) is the straightforward
reference for any dimension. The rolling state uses `mmd2_window`, the same arithmetic for 2-D z:
identical standardized values and squared distances (so the same median, bit for bit), kernel sums
over i < j only, no allocation (a workspace from `workspace_size`), and two speedups:
- the median is selected inside a bracket spanning the previous bar's median and that scaled by the
  change of the per-dimension variances: one vectorized pass writes the distances (reused by the
  kernel sum), counts those below and collects the few inside, then a quickselect over those; a
  miss widens the bracket, the last resort collects all (`median_pair_sq_dist`);
- `exp_neg_sum` evaluates `exp(-d inv)` vectorized: `s = n ln2 + r`, `|r| <= ln2/2`, `exp(r)` by its
  degree-13 Taylor polynomial (truncation < 0.02 ulp; Estrin's scheme), `2^n` built from the exponent
  bits; within 2 ulp of `math.exp` per term; arguments below -708 give 0 (math.exp gives at most
  3.31e-308 there).
The kernel sums equal the reference's up to float round-off: about 1e-14 absolute on MMD2_u, whose
terms are O(1).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from himari.daemon.matrices.mlmi import kth_smallest
from himari.daemon.matrices.config import MmdConfig

STD_FLOOR = 1e-8
SCORE_MAX = math.sqrt(2.0)
BRACKET_REL = 0.03  # margin of the median bracket (misses < 1% of bars on recorded data)
_CHUNK = 512  # exp scratch length (the two buffers stay in L1)
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # low bits zero: n * _LN2_HI is exact for |n| < 2048
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2^52: adding it rounds to an integer kept in the low bits
_C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = (1.0 / math.factorial(k)
                                                            for k in range(3, 14))


# ---- reference kernels (any dimension)

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
def _kernel_sum(a: np.ndarray, b: np.ndarray, inv: float, den: float, same: bool) -> float:
    """Sum of exp(-|a_i - b_j|^2 * inv) over all i, j, or over i < j when `same`; when the
    reciprocal overflows (a subnormal sigma^2) the argument is `-|a_i - b_j|^2 / den` instead."""
    total = 0.0
    dim = a.shape[1]
    div = not inv < np.inf
    for i in range(a.shape[0]):
        for j in range(i + 1 if same else 0, b.shape[0]):
            s = 0.0
            for c in range(dim):
                s += (a[i, c] - b[j, c]) ** 2
            total += math.exp(-s / den if div else -s * inv)
    return total


@numba.njit(cache=True)
def mmd2_fixed(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Step 5: unbiased MMD^2 of x (m, d) and y (n, d) with a Gaussian kernel of width sigma."""
    m = x.shape[0]
    n = y.shape[0]
    den = 2.0 * sigma * sigma
    inv = 1.0 / den
    # The i < j sums doubled are the ordered sums over i != j.
    kxx = 2.0 * _kernel_sum(x, x, inv, den, True)
    kyy = 2.0 * _kernel_sum(y, y, inv, den, True)
    kxy = _kernel_sum(x, y, inv, den, False)
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


# ---- fast kernels (2-D z, rolling window)

@numba.njit(cache=True, fastmath={"contract"})
def _exp_neg_block(d: np.ndarray, inv: float, e: np.ndarray, t: np.ndarray) -> None:
    """e_i * 2^n_i = exp(-d_i inv), n_i kept in the low bits of t_i (see `exp_neg_sum`). No
    reassociation here: the shifter and Cody-Waite steps rely on the written order."""
    for i in range(d.shape[0]):
        s = -d[i] * inv
        sc = s if s >= -708.0 else -708.0
        tt = sc * _LOG2E + _SHIFT
        nf = tt - _SHIFT
        r = (sc - nf * _LN2_HI) - nf * _LN2_LO
        r2 = r * r  # Estrin's scheme: short dependency chains keep the FMA units busy
        r4 = r2 * r2
        q0 = (1.0 + r) + (0.5 + _C3 * r) * r2
        q1 = (_C4 + _C5 * r) + (_C6 + _C7 * r) * r2
        q2 = (_C8 + _C9 * r) + (_C10 + _C11 * r) * r2
        q3 = _C12 + _C13 * r
        p = (q0 + q1 * r4) + (q2 + q3 * r4) * (r4 * r4)
        e[i] = p if s >= -708.0 else 0.0
        t[i] = tt


@numba.njit(cache=True, fastmath={"reassoc"})
def exp_neg_sum(d: np.ndarray, inv: float, ebuf: np.ndarray, tbuf: np.ndarray) -> float:
    """`sum_i exp(-d_i inv)` for finite d_i >= 0 and finite inv >= 0; ebuf and tbuf are scratch of
    equal length. Per chunk: `_exp_neg_block`, then tbuf's shifter bits `0x4338...` + n become the
    bits of 2^n in place (int64 view), then the dot product (reassociated: it vectorizes)."""
    bits = tbuf.view(np.int64)
    ch = ebuf.shape[0]
    total = 0.0
    for c0 in range(0, d.shape[0], ch):
        blk = d[c0:c0 + ch]
        k = blk.shape[0]
        e = ebuf[:k]
        t = tbuf[:k]
        b = bits[:k]
        _exp_neg_block(blk, inv, e, t)
        for i in range(k):
            b[i] = (b[i] + 1023) << 52
        for i in range(k):
            total += e[i] * t[i]
    return total


@numba.njit(cache=True)
def _exp_neg_sum_div(d: np.ndarray, den: float) -> float:
    """`sum_i exp(-d_i / den)`: the path for a subnormal sigma^2, whose reciprocal overflows."""
    total = 0.0
    for i in range(d.shape[0]):
        total += math.exp(-d[i] / den)
    return total


@numba.njit(cache=True)
def _row_sq_dists(a0: float, a1: float, b0: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    """out[k] <- |b_k - a|^2. Slices keep the indices non-negative so this vectorizes (a signed
    index costs a wraparound select); the operations are `median_sq_dist`'s, so the bits match."""
    for k in range(out.shape[0]):
        u = b0[k] - a0
        v = b1[k] - a1
        out[k] = u * u + v * v


@numba.njit(cache=True)
def _bracket_pass(x0: np.ndarray, x1: np.ndarray, mid: float, half: float, buf: np.ndarray,
                  dist: np.ndarray) -> tuple[int, int]:
    """One pass over the pairs i < j: d = |x_i - x_j|^2 written to `dist` (row-major) and
    (count below, count inside) for the interval `|d - mid| <= half` (below: `d - mid < -half`; one
    rounded difference decides both, so the sets are consistent intervals in d); the inside values
    are copied to buf. Rows go in blocks of 16 (a vectorized loop that also counts); only a block
    with a hit is searched (one rare branch per value)."""
    m = x0.shape[0]
    below = 0
    c = 0
    p = 0
    for i in range(m - 1):
        a0 = x0[i]
        a1 = x1[i]
        for j0 in range(i + 1, m, 16):
            n = min(16, m - j0)
            b0 = x0[j0:j0 + n]
            b1 = x1[j0:j0 + n]
            o = dist[p:p + n]
            p += n
            inside = 0
            for k in range(n):
                u = b0[k] - a0
                v = b1[k] - a1
                d = u * u + v * v  # as `median_sq_dist`: the same bits
                o[k] = d
                t = d - mid
                below += t < -half
                inside += abs(t) <= half
            if inside:
                for k in range(n):
                    d = o[k]
                    if abs(d - mid) <= half:
                        buf[c] = d
                        c += 1
    return below, c


@numba.njit(cache=True)
def median_pair_sq_dist(x0: np.ndarray, x1: np.ndarray, lo: float, hi: float, buf: np.ndarray,
                        dist: np.ndarray) -> tuple[float, int]:
    """(`median_sq_dist` of the 2-D points (x0, x1), passes over the pairs); m >= 2, finite input.

    buf and dist: >= m(m-1)/2 slots; dist receives the squared distances (row-major, i < j). Each
    pass (`_bracket_pass`) builds the distances and collects those inside the bracket [lo, hi];
    when the middle order statistics fall inside, a quickselect over the few collected values finds
    them. No valid bracket: one around the median of the pairs among every 4th point. A miss widens
    the failing side; the 4th pass takes all. Quickselect leaves buf[k+1:] >= buf[k], so the upper
    middle value is a min over that part."""
    m = x0.shape[0]
    cnt = m * (m - 1) // 2
    h = cnt // 2
    k0 = h - 1 if cnt % 2 == 0 else h
    k1 = h
    if not (lo <= hi):
        ns = 0
        for i in range(0, m, 4):
            for j in range(i + 4, m, 4):
                u = x0[j] - x0[i]
                v = x1[j] - x1[i]
                buf[ns] = u * u + v * v
                ns += 1
        g = kth_smallest(buf[:ns], ns // 2) if ns > 0 else 1.0
        lo = g * 0.95
        hi = g * 1.05
    passes = 0
    while True:
        passes += 1
        mid = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)
        if passes == 4:
            mid = 0.0
            half = np.inf
        below, c = _bracket_pass(x0, x1, mid, half, buf, dist)
        if below <= k0 and below + c > k1:
            a = kth_smallest(buf[:c], k0 - below)
            if k1 == k0:
                return a, passes
            rest = buf[k0 - below + 1:c]
            b = rest[0]
            for i in range(1, rest.shape[0]):
                if rest[i] < b:
                    b = rest[i]
            return 0.5 * (a + b), passes
        step = max(hi - lo, 0.01 * abs(hi)) * 4.0 ** passes
        if below > k0:
            lo -= step
        if below + c <= k1:
            hi += step


@numba.njit(cache=True)
def _cross_sq_dists(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, same: int,
                    out: np.ndarray) -> np.ndarray:
    """|x_i - y_j|^2 row-major into out over all i, j, or over i < j when `same` (y = x); returns
    the filled part."""
    p = 0
    for i in range(x0.shape[0]):
        j0 = i + 1 if same else 0
        n = y0.shape[0] - j0
        _row_sq_dists(x0[i], x1[i], y0[j0:], y1[j0:], out[p:p + n])
        p += n
    return out[:p]


@numba.njit(cache=True)
def _kernel_total(d: np.ndarray, inv: float, den: float, ebuf: np.ndarray,
                  tbuf: np.ndarray) -> float:
    """`sum exp(-d * inv)` as `_kernel_sum` (the division form when the reciprocal overflowed)."""
    if inv < np.inf:
        return exp_neg_sum(d, inv, ebuf, tbuf)
    return _exp_neg_sum_div(d, den)


@numba.njit(cache=True)
def _standardize_column(x: np.ndarray, y: np.ndarray, xo: np.ndarray,
                        yo: np.ndarray) -> tuple[float, bool]:
    """One column of `standardize` into xo, yo: (sd, all of yo finite); sd is nan if x is not finite."""
    m = x.shape[0]
    mean = 0.0
    for i in range(m):
        mean += x[i]
    mean /= m
    var = 0.0
    for i in range(m):
        var += (x[i] - mean) ** 2
    if not var < np.inf:
        return np.nan, False
    sd = math.sqrt(var / m)
    if sd < STD_FLOOR:
        sd = STD_FLOOR
    for i in range(m):
        xo[i] = (x[i] - mean) / sd
    ok = True
    for i in range(y.shape[0]):
        v = (y[i] - mean) / sd
        yo[i] = v
        ok = ok and abs(v) < np.inf
    return sd, ok


def workspace_size(m: int, n: int) -> int:
    """float64 slots `mmd2_window` needs for reference size m and test size n."""
    return 2 * m + 2 * n + 2 * _CHUNK + m * (m - 1) + n * (n - 1) // 2 + m * n


@numba.njit(cache=True)
def mmd2_window(z: np.ndarray, start: int, m: int, n: int, work: np.ndarray,
                hint: np.ndarray) -> tuple[float, float]:
    """(MMD2_u, sigma) for X = z[:, start:start+m] and Y = z[:, start+m:start+m+n] (z is (2, N):
    returns, log ranges); the value of `mmd2_unbiased` up to round-off, sigma identical.

    `work` has `workspace_size(m, n)` slots. `hint` (4 floats) carries the previous median and the
    two standard deviations (nan: none; updated here) and hint[3] counts the median passes."""
    xs0 = work[0:m]
    xs1 = work[m:2 * m]
    o = 2 * m
    ys0 = work[o:o + n]
    ys1 = work[o + n:o + 2 * n]
    o += 2 * n
    ebuf = work[o:o + _CHUNK]
    tbuf = work[o + _CHUNK:o + 2 * _CHUNK]
    o += 2 * _CHUNK
    npx = m * (m - 1) // 2
    dxx = work[o:o + npx]
    buf = work[o + npx:o + 2 * npx]  # the median's collection: only its start is touched normally
    dyx = work[o + 2 * npx:]

    # Step 3, as `standardize`.
    sd0, ok0 = _standardize_column(z[0, start:start + m], z[0, start + m:start + m + n], xs0, ys0)
    sd1, ok1 = _standardize_column(z[1, start:start + m], z[1, start + m:start + m + n], xs1, ys1)
    if sd0 != sd0 or sd1 != sd1:  # a nan or inf in X
        return np.nan, np.nan

    # Step 4: the bracket spans the previous median and that scaled by the variance change.
    prev = hint[0]
    lo = np.nan
    hi = np.nan
    if prev == prev:
        pred = prev * 0.5 * ((hint[1] / sd0) ** 2 + (hint[2] / sd1) ** 2)
        lo = min(prev, pred) * (1.0 - BRACKET_REL)
        hi = max(prev, pred) * (1.0 + BRACKET_REL)
    sigma2, passes = median_pair_sq_dist(xs0, xs1, lo, hi, buf, dxx)
    hint[0] = sigma2
    hint[1] = sd0
    hint[2] = sd1
    hint[3] += passes
    if sigma2 == 0.0:
        sigma2 = 1.0
    sigma = math.sqrt(sigma2)
    if not (ok0 and ok1):
        return np.nan, sigma

    # Step 5 over i < j within X and Y, all pairs across.
    den = 2.0 * sigma * sigma
    inv = 1.0 / den
    kxx = 2.0 * _kernel_total(dxx, inv, den, ebuf, tbuf)  # the median pass left the distances
    dyy = _cross_sq_dists(ys0, ys1, ys0, ys1, np.int64(1), dyx)  # np.int64: one compiled version
    kyy = 2.0 * _kernel_total(dyy, inv, den, ebuf, tbuf)
    dxy = _cross_sq_dists(xs0, xs1, ys0, ys1, np.int64(0), dyx)
    kxy = _kernel_total(dxy, inv, den, ebuf, tbuf)
    return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2.0 * kxy / (m * n), sigma


def score(mmd2: float) -> float:
    """`sqrt(max(0, MMD2_u))` clipped to sqrt(2); nan stays nan."""
    if math.isnan(mmd2):
        return math.nan
    return min(math.sqrt(max(0.0, mmd2)), SCORE_MAX)


def warmup() -> None:
    """Compile the kernels the rolling state uses (the reference kernels compile on first use)."""
    z = np.array([[0.0, 1.0, 0.5, 0.0, 1.0], [1.0, 0.5, 0.2, 1.0, 0.5]])
    mmd2_window(z, 0, 3, 2, np.empty(workspace_size(3, 2)), np.full(4, np.nan))


class MmdState:
    """Rolling z vectors; `update` returns the score, nan until t >= test + reference.

    z is kept twice in a (2, 2W) ring (W = test + reference) so the last W vectors are one slice."""

    def __init__(self, cfg: MmdConfig | None = None) -> None:
        self.cfg = cfg = cfg or MmdConfig()
        self._w = w = cfg.test + cfg.reference
        self._z = np.zeros((2, 2 * w))
        self._head = 0  # next write slot; the window is [head, head + W) once full
        self._count = 0
        self._work = np.empty(workspace_size(cfg.reference, cfg.test))
        self._hint = np.full(4, np.nan)
        self._hint[3] = 0.0
        self._prev_close: float | None = None
        self.last_mmd2 = math.nan
        self.last_sigma = math.nan

    @property
    def median_passes(self) -> int:
        """Passes over the pair distances spent selecting medians (1 per bar when the bracket hits)."""
        return int(self._hint[3])

    def update(self, close: float, high: float, low: float) -> float:
        prev = self._prev_close
        self._prev_close = close
        if prev is None:
            return math.nan
        r = math.log(close / prev) if close > 0.0 and prev > 0.0 else math.nan
        g = math.log(high / low) if high > 0.0 and low > 0.0 else math.nan
        w, h, z = self._w, self._head, self._z
        z[0, h] = z[0, h + w] = r
        z[1, h] = z[1, h + w] = g
        self._head = (h + 1) % w
        if self._count < w:
            self._count += 1
            if self._count < w:
                return math.nan
        cfg = self.cfg
        mmd2, sigma = mmd2_window(z, self._head, cfg.reference, cfg.test, self._work, self._hint)
        self.last_mmd2, self.last_sigma = mmd2, sigma
        return score(mmd2)
