"""Column values to numbers, vectorized: floats and aggressor sides from Arrow arrays, and the
price/size grid (tick or lot) from float values.

`to_float` returns float64 values with two masks, `missing` (null or empty) and `unparseable`
(text that is not a number; NaN/inf text parses and is judged by the caller).

`to_side` maps aggressor codes to +1 (buy) / -1 (sell) / 0 (unknown): B/BUY/+1/1/LONG buy,
S/SELL/-1/SHORT sell, N/NONE/0/"" and the like unknown; buyer-maker flags (true = the buyer was
the maker, so the aggressor sold: -1); `[feed.side_codes]` maps any other code first. A code it
does not know is side 0 and reported, never a dropped row: a trade without a known aggressor is
still a trade. Text is mapped once per distinct code (dictionary-encoded), not per row.

Grid: a value v is on a grid of step g when |v/g - rint(v/g)| <= 1e-6 + 1e-12 |v/g|, i.e. within a
millionth of a step plus float64 representation error (a tolerance of 1e-6 |v/g| alone would
accept a step of 0.1 for 39432.48). `infer_tick` goes further than the decimals: with the
power-of-ten step 10^-d every price is an exact integer k = rint(v 10^d) (|k| < 2^53), and the tick
is gcd(k) 10^-d in integer arithmetic, so a 0.25 grid quoted with two decimals has tick 0.25.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NUM_RE = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])$"
_BUY = ["buy", "b", "1", "+1", "long"]
_SELL = ["sell", "s", "-1", "short"]
_TRUE = ["true", "t", "1", "yes", "y"]
_FALSE = ["false", "f", "0", "no", "n"]
# "bid"/"ask" as a side is ambiguous (hit the bid, or the bid side aggressed?): left unknown
_UNKNOWN = ["", "0", "n", "none", "unknown", "n/a", "na", "null", "nan", "-", "?",
            "bid", "ask", "offer"]


def _np(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False)


def _cast_float(s: pa.Array) -> np.ndarray:
    """Cast text that passed the number regex; bisect if Arrow still refuses some value."""
    try:
        return _np(s.cast(pa.float64()).fill_null(np.nan))
    except pa.ArrowInvalid:
        if len(s) <= 1:
            return np.full(len(s), np.nan)
        mid = len(s) // 2
        return np.concatenate((_cast_float(s.slice(0, mid)), _cast_float(s.slice(mid))))


def to_float(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (values float64 with NaN where missing/unparseable, missing, unparseable)."""
    missing = _np(arr.is_null())
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return _np(arr.cast(pa.float64()).fill_null(np.nan)), missing, np.zeros(len(arr), bool)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        arr = arr.cast(pa.string())
    s = pc.utf8_trim(arr, characters=" \t\"")
    empty = pc.fill_null(pc.equal(s, ""), True)
    missing = _np(empty)
    ok = pc.fill_null(pc.match_substring_regex(s, _NUM_RE), False)
    values = _cast_float(pc.if_else(ok, s, "nan"))
    unparseable = ~missing & ~_np(ok)
    return np.where(missing | unparseable, np.nan, values), missing, unparseable


def _code_table(buyer_maker: bool, codes: dict[str, int] | None) -> dict[str, int]:
    """Lower-case code -> side; None for a code known to mean 'no aggressor'."""
    table: dict[str, int] = {c: 0 for c in _UNKNOWN}
    plus, minus = (_FALSE, _TRUE) if buyer_maker else (_BUY, _SELL)
    table.update({c: 1 for c in plus})
    table.update({c: -1 for c in minus})
    table.update({k.strip().lower(): int(v) for k, v in (codes or {}).items()})
    return table


def to_side(arr: pa.Array, buyer_maker: bool,
            codes: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (side int8 in {+1, -1, 0}, unrecognised mask). Null means unknown (0); an unrecognised
    code is side 0 too, flagged so the caller can report it."""
    n = len(arr)
    t = arr.type
    if pa.types.is_boolean(t):
        flag = _np(arr.fill_null(False)).astype(bool)
        known = _np(arr.is_valid())
        side = np.where(flag, -1, 1) if buyer_maker else np.where(flag, 1, -1)
        return np.where(known, side, 0).astype(np.int8), np.zeros(n, bool)
    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and not codes:
        v = _np(arr.cast(pa.float64()).fill_null(0.0))
        finite = np.isfinite(v)
        if buyer_maker:
            side = np.where(v != 0, -1, 1)
            return np.where(_np(arr.is_valid()) & finite, side, 0).astype(np.int8), ~finite
        return np.sign(np.where(finite, v, 0.0)).astype(np.int8), ~finite
    if not pa.types.is_dictionary(t):
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            arr = arr.cast(pa.string())
        arr = pc.dictionary_encode(arr)
    words = arr.dictionary.to_pylist()
    table = _code_table(buyer_maker, codes)
    lut = np.zeros(len(words) + 1, dtype=np.int8)  # the last slot serves nulls
    known = np.ones(len(words) + 1, dtype=bool)
    for k, w in enumerate(words):
        code = str(w).strip(" \t\"'").lower()
        if code in table:
            lut[k] = table[code]
        else:
            known[k] = False
    idx = arr.indices.fill_null(len(words)).to_numpy(zero_copy_only=False)
    return lut[idx], ~known[idx]


@numba.njit(cache=True, nogil=True)
def _grid_pass(values: np.ndarray, factor: float, divide: bool, ints: np.ndarray,
               on_grid: np.ndarray) -> int:
    """One pass: ints = rint(v * factor) (or v / factor), on_grid per the tolerance above;
    returns how many values are off the grid (non-finite ones count as off)."""
    off = 0
    for i in range(values.shape[0]):
        v = values[i]
        s = v / factor if divide else v * factor
        if not (abs(s) < 9.0e18):  # also NaN
            ints[i] = 0
            on_grid[i] = False
            off += 1
            continue
        r = np.rint(s)
        ints[i] = np.int64(r)
        # within a millionth of a step (plus float error); a non-zero value never rounds to 0
        ok = abs(s - r) <= 1e-6 + 1e-12 * abs(s) and (r != 0.0 or v == 0.0)
        on_grid[i] = ok
        off += not ok
    return off


def _grid_ints(values: np.ndarray, step: Decimal) -> tuple[np.ndarray, np.ndarray, int]:
    inv = Decimal(1) / step
    shape = np.shape(values)
    v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)  # any shape, one pass
    ints = np.empty(v.shape[0], dtype=np.int64)
    on_grid = np.empty(v.shape[0], dtype=np.bool_)
    if inv == inv.to_integral_value():
        off = _grid_pass(v, float(inv), False, ints, on_grid)
    else:
        off = _grid_pass(v, float(step), True, ints, on_grid)
    return ints.reshape(shape), on_grid.reshape(shape), off


def _off_grid(values: np.ndarray, decimals: int) -> np.ndarray:
    return ~_grid_ints(values, Decimal(1).scaleb(-decimals))[1]


def infer_step(values: np.ndarray, max_decimals: int = 10) -> tuple[Decimal, bool]:
    """The coarsest power-of-ten step on which every finite value lies -> (step, exact).
    `exact` is False when even 10^-max_decimals does not fit (values are then rounded)."""
    finite = np.isfinite(values)
    v = values if finite.all() else values[finite]
    if v.size == 0:
        return Decimal(1), True
    start = 0
    sample = v[:: max(1, v.size // 10_000)]
    while start < max_decimals and _off_grid(sample, start).any():
        start += 1  # the sample's need is a lower bound for the whole array
    for decimals in range(start, max_decimals + 1):
        _, on, n_off = _grid_ints(v, Decimal(1).scaleb(-decimals))
        if n_off == 0:
            return Decimal(1).scaleb(-decimals), True
        v = v[~on]  # a value on a grid is on every finer one: recheck only the misfits
    return Decimal(1).scaleb(-max_decimals), False


def infer_tick(values: np.ndarray, max_decimals: int = 10) -> tuple[Decimal, bool]:
    """The greatest common step of the finite values -> (step, exact); see the module docstring.
    Falls back to `infer_step` (a power of ten) when the integers would not be exact in float64."""
    step, exact = infer_step(values, max_decimals)
    finite = np.isfinite(values)
    v = values if finite.all() else values[finite]
    if v.size == 0 or not exact:
        return step, exact
    k, _, _ = _grid_ints(v, step)
    if k.min() < 0:
        k = np.abs(k)
    if k.max() >= 2 ** 52:
        return step, exact
    g = int(np.gcd.reduce(k[:4096]))
    while g > 1:  # the sample's gcd divides the true one: recheck only the values it leaves over
        rest = k[k % g != 0]
        if rest.size == 0:
            break
        g = int(np.gcd(g, np.gcd.reduce(rest[:4096])))
    if g == 0 or k.min() == k.max():  # one distinct value says nothing about a grid
        return step, exact
    return step * g, exact


def decimal_gcd(values: list[Decimal]) -> Decimal:
    """The greatest common step of positive decimals, exactly (0.5, 0.25 -> 0.25)."""
    exp = min(int(v.normalize().as_tuple().exponent) for v in values)
    g = 0
    for v in values:
        g = math.gcd(g, int(v.scaleb(-exp)))
    return Decimal(g).scaleb(exp).normalize()


def to_grid(values: np.ndarray, step: Decimal) -> tuple[np.ndarray, np.ndarray]:
    """Float values to int64 multiples of `step` -> (ints, on_grid). Non-finite -> 0, off grid."""
    ints, on_grid, _ = _grid_ints(values, step)
    return ints, on_grid
