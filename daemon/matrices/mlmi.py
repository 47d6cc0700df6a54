"""MLMI, the Machine Learning Momentum Index (spec features.md 3.1; TradingView MLMI by Zeiierman).

Called once per closed 30-minute bar with its close `C_t` (float64 price units); bar t counts from 0.
Notation: `WMA_n(x)_t = sum_{j=0..n-1} (n-j) x_{t-j} / (n(n+1)/2)`; Wilder `RMA_n` seeded with the
simple mean of its first n inputs, then `RMA_t = (RMA_{t-1} (n-1) + x_t) / n`.

1. `ma_q = WMA_{ma_fast}(C)` (5), `ma_s = WMA_{ma_slow}(C)` (20);
   `p1 = WMA_{trend}(RSI_{rsi_slow}(C))`, `p2 = WMA_{trend}(RSI_{rsi_fast}(C))` (trend 20, RSI 20 / 5).
   Wilder RSI on the changes `C_t - C_{t-1}` (from t = 1): `RSI = 100 - 100/(1 + RMA(up)/RMA(down))`,
   100 when `RMA(down) = 0` (checked first, so flat prices give 100), 0 when `RMA(up) = 0`.
   RSI_n exists from t = n, so p1 from t = rsi_slow + trend - 1 = 39, p2 from t = 24.
2. Event when `ma_q` crosses `ma_s` either way between t-1 and t (both defined at t-1: t >= 20):
   `(ma_q_t > ma_s_t and ma_q_{t-1} <= ma_s_{t-1})` or `(ma_q_t < ma_s_t and ma_q_{t-1} >= ma_s_{t-1})`.
3. On an event with finite p1, p2: append `(p1, p2, C_t, y)` to the store; `y = 0` for the first entry
   ever, else `+1` if `C_t >=` the previous entry's price (even if it has been evicted), else `-1`.
   The store keeps the latest `store_max` (10,000) entries in a ring.
4. Query `(p1_t, p2_t)` after step 3: Euclidean distances `d_j` to all n entries, `m = min(k, n)`,
   `D*` = the m-th smallest distance, neighbours = every j with `d_j <= D*` (ties kept, `k_eff >= m`),
   `P_t` = sum of their labels. Empty store or non-finite query: `P_t = 0`, `k_eff = 0`.
5. `mlmi_value = P_t / k_eff` (0 if `k_eff = 0`), in [-1, 1]. `M = WMA_{signal_wma}(P)` over the P
   series that starts when the query first is finite (t = 39), so M exists from t = 58;
   `mlmi_signal = +1` if `P_t > M_t and P_{t-1} <= M_{t-1}`, `-1` if `P_t < M_t and P_{t-1} >= M_{t-1}`,
   else 0; valid from t = 59.

The kNN vote (step 4, up to 10,000 entries per bar): `knn_vote` (quickselect `kth_smallest` for
`D*`) is the reference; the store uses `knn_vote_ring`, the same distances (bit for bit) and the same
`D*`: the previous bar's `D*` plus the query's move bounds it (triangle inequality), so one
vectorized pass builds the distances and collects the few within that bound for a quickselect;
a bounded max-heap scan is the fallback; then one vectorized counting pass; no allocation. The WMAs
run on rings holding each series twice (the last `cap` values are one slice), with the same
summation order as `wma`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

from himari.daemon.matrices.config import MlmiConfig


@numba.njit(cache=True)
def kth_smallest(a: np.ndarray, k: int) -> float:
    """The k-th smallest value (0-based) of `a`, which is reordered in place (Hoare quickselect).

    Hand-written because numba's np.partition takes seconds to compile; mmd.py uses it too."""
    lo = 0
    hi = a.shape[0] - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:  # j < k < i: a[k] equals the pivot
            break
    return a[k]


@numba.njit(cache=True)
def knn_vote(p1: np.ndarray, p2: np.ndarray, y: np.ndarray, q1: float, q2: float,
             k: int) -> tuple[float, int]:
    """(P, k_eff): sum of the labels of every entry within the min(k, n)-th smallest distance."""
    n = p1.shape[0]
    if n == 0 or k <= 0 or not (np.isfinite(q1) and np.isfinite(q2)):
        return 0.0, 0
    d = np.empty(n)
    for j in range(n):
        a = p1[j] - q1
        b = p2[j] - q2
        d[j] = math.sqrt(a * a + b * b)
    m = min(k, n)
    dstar = kth_smallest(d.copy(), m - 1)
    votes = 0.0
    k_eff = 0
    for j in range(n):
        if d[j] <= dstar:
            votes += y[j]
            k_eff += 1
    return votes, k_eff


@numba.njit(cache=True)
def _sift_down(h: np.ndarray, i: int, m: int) -> None:
    """Restore the max-heap h[:m] below slot i."""
    v = h[i]
    while True:
        c = 2 * i + 1
        if c >= m:
            break
        if c + 1 < m and h[c + 1] > h[c]:
            c += 1
        if h[c] > v:
            h[i] = h[c]
            i = c
        else:
            break
    h[i] = v


@numba.njit(cache=True)
def mth_smallest_newest_first(d: np.ndarray, m: int, newest: int, heap: np.ndarray) -> float:
    """The m-th smallest (1-based, 1 <= m <= len(d)) of d via a max-heap of the m smallest seen,
    visiting d[newest], d[newest - 1], ... cyclically; heap has at least m slots."""
    n = d.shape[0]
    h = heap[:m]
    for idx in range(m):
        j = newest - idx
        h[idx] = d[j + n if j < 0 else j]
    for i in range(m // 2 - 1, -1, -1):
        _sift_down(h, i, m)
    top = h[0]
    for idx in range(m, n):
        j = newest - idx
        v = d[j + n if j < 0 else j]
        if v < top:
            h[0] = v
            _sift_down(h, np.int64(0), m)  # not a literal: one compiled version
            top = h[0]
    return top


@numba.njit(cache=True, fastmath={"reassoc"})
def _votes_within(d: np.ndarray, y: np.ndarray, dstar: float) -> tuple[float, int]:
    """(sum of y_j, count) over d_j <= dstar; labels are 0/+-1, so any summation order is exact."""
    votes = 0.0
    k_eff = 0
    for j in range(d.shape[0]):
        inside = d[j] <= dstar
        votes += y[j] if inside else 0.0
        k_eff += inside
    return votes, k_eff


@numba.njit(cache=True)
def knn_vote_ring(p1: np.ndarray, p2: np.ndarray, y: np.ndarray, n: int, head: int, q1: float,
                  q2: float, k: int, dbuf: np.ndarray, scratch: np.ndarray,
                  hint: np.ndarray) -> tuple[float, int]:
    """`knn_vote` over the first n slots of a ring whose next write slot is `head` (the newest entry
    is at head - 1, cyclically); dbuf and scratch have >= n slots.

    hint = (previous q1, q2, D*), nan when none, updated here. The previous m nearest entries lie
    within `D*_prev + |q - q_prev|` of q (triangle inequality), so unless one was evicted that bound
    holds at least m entries: one vectorized pass builds the distances and collects those within
    the bound (16-value blocks, searched only on a hit), and a quickselect over the few collected
    gives D*. With fewer than m collected, or no hint, a bounded max-heap scan finds D*."""
    if n == 0 or k <= 0 or not (abs(q1) < np.inf and abs(q2) < np.inf):
        return 0.0, 0
    m = min(k, n)
    a1 = p1[:n]
    a2 = p2[:n]
    d = dbuf[:n]
    bound = -1.0  # collect nothing
    if hint[2] == hint[2]:
        dq = math.sqrt((q1 - hint[0]) ** 2 + (q2 - hint[1]) ** 2)
        bound = (hint[2] + dq) * (1.0 + 1e-9)  # the margin covers rounding
    c = 0
    for b0 in range(0, n, 16):
        e1 = a1[b0:b0 + 16]
        e2 = a2[b0:b0 + 16]
        o = d[b0:b0 + 16]
        inside = 0
        for j in range(o.shape[0]):
            a = e1[j] - q1
            b = e2[j] - q2
            v = math.sqrt(a * a + b * b)  # as `knn_vote`: the same bits
            o[j] = v
            inside += v <= bound
        if inside:
            for j in range(o.shape[0]):
                if o[j] <= bound:
                    scratch[c] = o[j]
                    c += 1
    if c >= m:
        dstar = kth_smallest(scratch[:c], m - 1)
    else:
        newest = head - 1
        if newest < 0 or newest >= n:
            newest = n - 1
        dstar = mth_smallest_newest_first(d, m, newest, scratch)
    hint[0] = q1
    hint[1] = q2
    hint[2] = dstar
    return _votes_within(d, y[:n], dstar)


@numba.njit(cache=True)
def _wma(x: np.ndarray) -> float:
    """`wma(x, len(x))`: the same terms in the same order."""
    n = x.shape[0]
    num = 0.0
    for j in range(n):
        num += (n - j) * x[n - 1 - j]
    return num / (n * (n + 1) / 2.0)


@numba.njit(cache=True)
def push_wma(buf: np.ndarray, head: int, x: float, n1: int, n2: int) -> tuple[float, float]:
    """Write x at ring slot `head` (buf has 2 x cap slots), return the WMA_n1 and WMA_n2 of the
    newest values (n1, n2 <= cap; meaningful once that many values were written)."""
    cap = buf.shape[0] // 2
    buf[head] = x
    buf[head + cap] = x
    stop = head + 1 + cap
    return _wma(buf[stop - n1:stop]), _wma(buf[stop - n2:stop])


def warmup() -> None:
    """Compile the kernels the state uses on tiny inputs (the reference `knn_vote` on first use)."""
    a = np.array([1.0, 2.0, 3.0])
    b = np.zeros(4)
    knn_vote_ring(a, a, np.array([0.0, 1.0, -1.0]), 3, 0, 1.5, 1.5, 2, np.empty(3), np.empty(3),
                  np.full(3, np.nan))
    push_wma(b, 0, 1.0, 1, 2)


def wma(x: Sequence[float], n: int) -> float:
    """WMA_n of the last n values of `x` (newest last); the caller ensures len(x) >= n."""
    num = 0.0
    for j in range(n):
        num += (n - j) * x[-1 - j]
    return num / (n * (n + 1) / 2.0)


def rsi_from_rma(up: float, down: float) -> float:
    if down == 0.0:
        return 100.0
    if up == 0.0:
        return 0.0
    return 100.0 - 100.0 / (1.0 + up / down)


class WilderRsi:
    """Incremental Wilder RSI over price changes; `update(change)` returns nan until n changes."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._count = 0
        self._up = 0.0
        self._down = 0.0

    def update(self, change: float) -> float:
        n = self.n
        u = change if change > 0.0 else 0.0
        d = -change if change < 0.0 else 0.0
        if self._count < n:  # accumulate the simple-mean seed
            self._up += u
            self._down += d
            self._count += 1
            if self._count < n:
                return math.nan
            self._up /= n
            self._down /= n
        else:
            self._up = (self._up * (n - 1) + u) / n
            self._down = (self._down * (n - 1) + d) / n
        return rsi_from_rma(self._up, self._down)


class MlmiStore:
    """Ring of at most `capacity` entries (p1, p2, label); labels follow step 3."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.p1 = np.zeros(capacity)
        self.p2 = np.zeros(capacity)
        self.y = np.zeros(capacity)
        self.n = 0
        self.total = 0  # entries ever appended
        self._head = 0
        self._last_price = math.nan
        self._dbuf = np.empty(capacity)  # kNN scratch
        self._scratch = np.empty(capacity)
        self._hint = np.full(3, np.nan)  # previous query and D* (see knn_vote_ring)

    def add(self, p1: float, p2: float, price: float) -> float:
        """Append an entry; returns its label."""
        label = 0.0 if self.total == 0 else (1.0 if price >= self._last_price else -1.0)
        i = self._head
        self.p1[i], self.p2[i], self.y[i] = p1, p2, label
        self._head = (i + 1) % self.capacity
        self.n = min(self.n + 1, self.capacity)
        self.total += 1
        self._last_price = price
        return label

    def vote(self, q1: float, q2: float, k: int) -> tuple[float, int]:
        n = self.n  # while filling, the entries are the first n slots; once full, all slots
        return knn_vote_ring(self.p1, self.p2, self.y, n, self._head, q1, q2, k, self._dbuf,
                             self._scratch, self._hint)


class MlmiOutput(NamedTuple):
    value: float  # P / k_eff, 0 if k_eff = 0
    signal: int  # -1, 0, +1
    votes: float  # P
    k_eff: int
    event: bool  # an MA cross stored an entry at this bar
    p1: float
    p2: float


class MlmiState:
    """MLMI on one bar series; `update(close)` once per closed bar."""

    def __init__(self, cfg: MlmiConfig | None = None) -> None:
        self.cfg = cfg = cfg or MlmiConfig()
        self.t = -1
        self.store = MlmiStore(cfg.store_max)
        # Rings of 2 x cap slots (each value at i and i + cap) and their fill counts.
        self._c_cap = max(cfg.ma_fast, cfg.ma_slow)
        self._closes = np.zeros(2 * self._c_cap)
        self._c_head = self._c_n = 0
        self._prev_close = math.nan
        self._rsi_fast = WilderRsi(cfg.rsi_fast)
        self._rsi_slow = WilderRsi(cfg.rsi_slow)
        self._rf = np.zeros(2 * cfg.trend)
        self._rs = np.zeros(2 * cfg.trend)
        self._rf_head = self._rf_n = self._rs_head = self._rs_n = 0
        self._p1 = math.nan  # WMA of the RSI rings; they only change when an RSI is pushed
        self._p2 = math.nan
        self._prev_ma: tuple[float, float] | None = None
        self._votes = np.zeros(2 * cfg.signal_wma)
        self._v_head = self._v_n = 0
        self._prev_pm: tuple[float, float] | None = None  # (P, M) at t-1

    def update(self, close: float) -> MlmiOutput:
        cfg = self.cfg
        self.t += 1
        trend = cfg.trend
        if self._c_n:
            change = close - self._prev_close
            rf = self._rsi_fast.update(change)
            if math.isfinite(rf):
                h = self._rf_head
                self._rf_head = (h + 1) % trend
                self._rf_n = min(self._rf_n + 1, trend)
                w = push_wma(self._rf, h, rf, trend, 1)[0]
                self._p2 = w if self._rf_n == trend else math.nan
            rs = self._rsi_slow.update(change)
            if math.isfinite(rs):
                h = self._rs_head
                self._rs_head = (h + 1) % trend
                self._rs_n = min(self._rs_n + 1, trend)
                w = push_wma(self._rs, h, rs, trend, 1)[0]
                self._p1 = w if self._rs_n == trend else math.nan
        self._prev_close = close
        cap = self._c_cap
        h = self._c_head
        self._c_head = (h + 1) % cap
        self._c_n = min(self._c_n + 1, cap)
        ma_q, ma_s = push_wma(self._closes, h, close, cfg.ma_fast, cfg.ma_slow)
        p1, p2 = self._p1, self._p2

        # Step 2: the MA cross.
        event = False
        ma: tuple[float, float] | None = None
        if self._c_n >= cap:
            ma = (ma_q, ma_s)
            if self._prev_ma is not None:
                (q0, s0) = self._prev_ma
                event = (ma_q > ma_s and q0 <= s0) or (ma_q < ma_s and q0 >= s0)
        self._prev_ma = ma

        # Steps 3-4: store and query.
        query_ok = math.isfinite(p1) and math.isfinite(p2)
        if event and query_ok:
            self.store.add(p1, p2, close)
        else:
            event = False
        votes, k_eff = self.store.vote(p1, p2, cfg.k) if query_ok else (0.0, 0)
        value = votes / k_eff if k_eff > 0 else 0.0

        # Step 5: the signal line, on the P series from the first defined query on.
        signal = 0
        if self.t >= cfg.value_valid_from:
            n = cfg.signal_wma
            h = self._v_head
            self._v_head = (h + 1) % n
            self._v_n = min(self._v_n + 1, n)
            m_now = push_wma(self._votes, h, votes, n, 1)[0]
            if self._v_n == n:
                if self._prev_pm is not None:
                    p_prev, m_prev = self._prev_pm
                    if votes > m_now and p_prev <= m_prev:
                        signal = 1
                    elif votes < m_now and p_prev >= m_prev:
                        signal = -1
                self._prev_pm = (votes, m_now)
        return MlmiOutput(value, signal, votes, k_eff, event, p1, p2)
