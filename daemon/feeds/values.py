"""Column values to numbers, vectorized: floats and aggressor sides from Arrow arrays, and the
price/size grid (tick or lot) from float values.

`to_float` returns float64 values with two masks, `missing` (null or empty) and `unparseable`
(text that is not a number; NaN/inf text parses and is judged by the caller). `to_side` maps
aggressor text (buy/sell/b/s/1/-1) or buyer-maker flags (true = the buyer was the maker, so the
aggressor sold: -1) to +1/-1/0.

Grid: a value v is on a grid of step g when |v/g - rint(v/g)| <= 1e-6 + 1e-12 |v/g|, i.e. within a
millionth of a step plus float64 representation error (a tolerance of 1e-6 |v/g| alone would
accept a step of 0.1 for 39432.48).
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NUM_RE = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])$"
_BUY = ["buy", "b", "1", "+1", "long"]
_SELL = ["sell", "s", "-1", "short"]
_TRUE = ["true", "t", "1", "yes", "y"]
_FALSE = ["false", "f", "0", "no", "n"]
# "bid"/"ask" as a side is ambiguous (hit the bid, or the bid side aggressed?): left unknown
_UNKNOWN = ["", "0", "none", "unknown", "n/a", "na", "null", "bid", "ask", "offer"]


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


def to_side(arr: pa.Array, buyer_maker: bool) -> tuple[np.ndarray, np.ndarray]:
    """-> (side int8 in {+1, -1, 0}, unparseable mask). Null means unknown (0)."""
    n = len(arr)
    t = arr.type
    if pa.types.is_boolean(t):
        flag = _np(arr.fill_null(False)).astype(bool)
        known = _np(arr.is_valid())
        side = np.where(flag, -1, 1) if buyer_maker else np.where(flag, 1, -1)
        return np.where(known, side, 0).astype(np.int8), np.zeros(n, bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        v = _np(arr.cast(pa.float64()).fill_null(0.0))
        if buyer_maker:
            side = np.where(v != 0, -1, 1)
            return np.where(_np(arr.is_valid()), side, 0).astype(np.int8), np.zeros(n, bool)
        return np.sign(np.nan_to_num(v)).astype(np.int8), ~np.isfinite(v)
    s = pc.utf8_lower(pc.utf8_trim(arr.cast(pa.string()), characters=" \t\""))
    s = pc.fill_null(s, "")
    if buyer_maker:
        plus, minus = _FALSE, _TRUE
    else:
        plus, minus = _BUY, _SELL
    is_plus = _np(pc.is_in(s, value_set=pa.array(plus)))
    is_minus = _np(pc.is_in(s, value_set=pa.array(minus)))
    unknown = _np(pc.is_in(s, value_set=pa.array(_UNKNOWN)))
    side = np.where(is_plus, 1, np.where(is_minus, -1, 0)).astype(np.int8)
    return side, ~(is_plus | is_minus | unknown)


def _off_grid(values: np.ndarray, decimals: int) -> np.ndarray:
    scaled = values * (10.0 ** decimals)
    return np.abs(scaled - np.rint(scaled)) > 1e-6 + 1e-12 * np.abs(scaled)


def infer_step(values: np.ndarray, max_decimals: int = 10) -> tuple[Decimal, bool]:
    """The coarsest power-of-ten step on which every finite value lies -> (step, exact).
    `exact` is False when even 10^-max_decimals does not fit (values are then rounded)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return Decimal(1), True
    start = 0
    sample = v[:: max(1, v.size // 10_000)]
    while start < max_decimals and _off_grid(sample, start).any():
        start += 1  # the sample's need is a lower bound for the whole array
    for decimals in range(start, max_decimals + 1):
        off = _off_grid(v, decimals)
        if not off.any():
            return Decimal(1).scaleb(-decimals), True
        v = v[off]  # a value on a grid is on every finer one: recheck only the misfits
    return Decimal(1).scaleb(-max_decimals), False


def to_grid(values: np.ndarray, step: Decimal) -> tuple[np.ndarray, np.ndarray]:
    """Float values to int64 multiples of `step` -> (ints, on_grid). Non-finite -> 0, off grid."""
    inv = Decimal(1) / step
    finite = np.isfinite(values)
    if inv == inv.to_integral_value():
        scaled = np.where(finite, values, 0.0) * float(inv)
    else:
        scaled = np.where(finite, values, 0.0) / float(step)
    fits = finite & (np.abs(scaled) < 9.0e18)
    rounded = np.rint(np.where(fits, scaled, 0.0))
    on_grid = fits & (np.abs(scaled - rounded) <= 1e-6 + 1e-12 * np.abs(scaled))
    return rounded.astype(np.int64), on_grid
