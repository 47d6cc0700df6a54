"""Timestamps (text, epoch numbers or Arrow timestamps) to int64 UTC epoch nanoseconds, vectorized.

`parse_timestamps(arr, unit, fmt, tz) -> (ns, bad)`: `bad` marks nulls and values that do not parse;
their `ns` is 0. Nothing here loops over rows in Python.

- Arrow timestamp columns (Parquet) are cast to ns; zone-less ones are read in `tz`.
- Numbers (or text that is all numbers) are epoch values in `unit`; "auto" picks the unit from the
  median magnitude of the first 1,000 values: < 1e11 s, < 1e14 ms, < 1e17 us, else ns. Integer and
  decimal text (up to 19 integer digits, so epoch nanoseconds) is converted exactly from its
  digits; only exponent forms go through float64. Integer columns are scaled in int64.
- Text dates: ISO 8601 (`YYYY-MM-DD[ T]hh:mm[:ss[.fffffffff]][Z|+hh:mm]`) goes through Arrow's
  cast when every value looks like it; anything else (compact `YYYYMMDD HHMMSSmmm`, slashes,
  mixed zones, a corrupt row) goes through one regex with named groups, the civil date converted
  to days with H. Hinnant's days_from_civil. Values without a zone offset are local to `tz`.
- `fmt` (strptime) uses Arrow's strptime; a trailing `%f` (1-9 digits) is split off first.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NUM_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_EXACT_RE = r"^[+-]?(\d{1,18}|[1-8]\d{18})(\.\d*)?$"  # the whole part fits int64
_ISO_RE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
_ZONE_RE = r"(Z|[+-]\d{2}(:?\d{2})?)$"
_DT_RE = (r"^(?P<Y>\d{4})[-/]?(?P<m>\d{2})[-/]?(?P<d>\d{2})"
          r"(?:[T ]?(?P<H>\d{2}):?(?P<M>\d{2})(?::?(?P<S>\d{2})(?:[.,]?(?P<f>\d{1,9}))?)?)?"
          r"\s*(?P<z>Z|[+-]\d{2}:?\d{2})?$")
_SCALE = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_I64_MAX = np.iinfo(np.int64).max


def parse_timestamps(arr: pa.Array | pa.ChunkedArray, unit: str = "auto", fmt: str = "",
                     tz: str = "UTC") -> tuple[np.ndarray, np.ndarray]:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_timestamp(t):
        return _from_timestamps(arr, tz)
    if pa.types.is_date(t):
        return _from_timestamps(arr.cast(pa.timestamp("s")), tz)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _from_numbers(arr, unit)
    if pa.types.is_large_string(t) or not pa.types.is_string(t):
        arr = arr.cast(pa.string())
    s = pc.utf8_trim(arr, characters=" \t\"'")
    if fmt:
        return _strptime(s, fmt, tz)
    if unit in _SCALE:
        return _numeric_text(s, unit)
    if unit == "auto":
        sample = _sample(s)
        # mostly numbers: epoch values (a corrupt value among them is judged per row)
        if len(sample) and pc.mean(pc.match_substring_regex(sample, _NUM_RE).cast(pa.int8())).as_py() >= 0.9:
            return _numeric_text(s, "auto")
    return _datetime_text(s, tz)


def _sample(s: pa.Array, n: int = 1000) -> pa.Array:
    head = s.slice(0, 4 * n).drop_null()
    head = head.filter(pc.not_equal(head, ""))
    return head.slice(0, n)


def _bad_of(arr: pa.Array) -> np.ndarray:
    return arr.is_null().to_numpy(zero_copy_only=False)


def _unit_for(magnitude: float) -> str:
    if magnitude < 1e11:
        return "s"
    if magnitude < 1e14:
        return "ms"
    if magnitude < 1e17:
        return "us"
    return "ns"


def _scale_ints(values: np.ndarray, scale: int, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if scale == 1:  # epoch ns: already exact
        return (np.where(bad, 0, values) if bad.any() else values), bad
    over = np.abs(values) > _I64_MAX // scale
    bad = bad | over
    return np.where(bad, 0, values * scale), bad


def _from_numbers(arr: pa.Array, unit: str) -> tuple[np.ndarray, np.ndarray]:
    bad = _bad_of(arr)
    if pa.types.is_integer(arr.type):
        values = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        if unit not in _SCALE:
            ok = values[~bad][:1000]
            unit = _unit_for(float(np.median(np.abs(ok)))) if len(ok) else "ns"
        return _scale_ints(values, _SCALE[unit], bad)
    values = arr.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    bad = bad | ~np.isfinite(values)
    if unit not in _SCALE:
        ok = values[~bad][:1000]
        unit = _unit_for(float(np.median(np.abs(ok)))) if len(ok) else "ns"
    scaled = values * _SCALE[unit]
    bad = bad | ~(np.abs(scaled) < 9.2e18)
    return np.where(bad, 0, np.rint(np.where(bad, 0.0, scaled))).astype(np.int64), bad


def _numeric_text(s: pa.Array, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers as text; plain integers and decimals are converted exactly (digit strings),
    exponent forms through float64."""
    is_num = pc.fill_null(pc.match_substring_regex(s, _NUM_RE), False)
    exact = pc.fill_null(pc.match_substring_regex(s, _EXACT_RE), False)
    floats = _np(pc.if_else(is_num, s, "0").cast(pa.float64()))
    num, ex = _np(is_num), _np(exact)
    if unit not in _SCALE:
        mags = np.abs(floats[num][:1000])
        unit = _unit_for(float(np.median(mags))) if len(mags) else "ns"
    scale = _SCALE[unit]
    digits = len(str(scale)) - 1
    # "123" -> "123." so that every exact value splits into integer and fraction digits
    text = pc.if_else(exact, s, "0")
    text = pc.if_else(pc.fill_null(pc.match_substring(text, "."), False), text,
                      pc.binary_join_element_wise(text, "", "."))
    parts = pc.split_pattern(text, ".")
    whole = _np(pc.list_element(parts, 0).cast(pa.int64()))
    frac = np.zeros(len(s), dtype=np.int64)
    if digits:
        f = pc.utf8_rpad(pc.utf8_slice_codeunits(pc.list_element(parts, 1), 0, digits), width=digits, padding="0")
        frac = _np(f.cast(pa.int64()))
    neg = _np(pc.starts_with(text, "-"))
    over = np.abs(whole) >= _I64_MAX // scale
    exact_ns = whole * scale + np.where(neg, -frac, frac)
    scaled = floats * scale
    float_bad = ~(np.abs(scaled) < 9.2e18)
    float_ns = np.rint(np.where(float_bad, 0.0, scaled)).astype(np.int64)
    bad = ~num | np.where(ex, over, float_bad)
    return np.where(bad, 0, np.where(ex, exact_ns, float_ns)), bad


def _np(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False)


def _from_timestamps(arr: pa.Array, tz: str) -> tuple[np.ndarray, np.ndarray]:
    bad = _bad_of(arr)
    if arr.type.tz is None and tz != "UTC":
        arr = pc.assume_timezone(arr, tz, ambiguous="earliest", nonexistent="earliest")
    ns = arr.cast(pa.timestamp("ns", arr.type.tz)).cast(pa.int64()).fill_null(0)
    return ns.to_numpy(zero_copy_only=False), bad


def _localize(ns: np.ndarray, naive: np.ndarray, tz: str) -> np.ndarray:
    """Reinterpret the `naive` entries of `ns` as wall-clock times in `tz`."""
    if tz == "UTC" or not naive.any():
        return ns
    local = pa.array(ns[naive], type=pa.timestamp("ns"))
    utc = pc.assume_timezone(local, tz, ambiguous="earliest", nonexistent="earliest")
    out = ns.copy()
    out[naive] = utc.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return out


def _datetime_text(s: pa.Array, tz: str) -> tuple[np.ndarray, np.ndarray]:
    sample = _sample(s)
    if len(sample) and pc.all(pc.match_substring_regex(sample, _ISO_RE)).as_py():
        n_zoned = pc.sum(pc.match_substring_regex(sample, _ZONE_RE)).as_py() or 0
        if n_zoned in (0, len(sample)):
            try:  # fastest: Arrow's own ISO 8601 parser (all-or-nothing; mixed zones fail it)
                target = pa.timestamp("ns", "UTC") if n_zoned else pa.timestamp("ns")
                return _from_timestamps(s.cast(target), tz)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
    fixed = _fixed_width_datetimes(s, tz)
    if fixed is not None:
        return fixed
    return _regex_datetimes(s, tz)


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of the proleptic Gregorian date (y, m, d), vectorized int64."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _fields_to_ns(y: np.ndarray, mo: np.ndarray, d: np.ndarray, hh: np.ndarray, mi: np.ndarray,
                  ss: np.ndarray, frac: np.ndarray, offset_s: np.ndarray | int,
                  ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Civil fields (UTC offset in seconds) -> (ns, valid)."""
    mc = np.clip(mo, 1, 12)
    first = days_from_civil(y, mc, np.ones_like(mc))
    nxt = days_from_civil(y + (mc == 12), mc % 12 + 1, np.ones_like(mc))
    valid = (ok & (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= nxt - first)
             & (hh <= 23) & (mi <= 59) & (ss <= 59))
    seconds = (first + d - 1) * 86400 + hh * 3600 + mi * 60 + ss - offset_s
    return np.where(valid, seconds * 1_000_000_000 + frac, 0), valid


def _fixed_width_datetimes(s: pa.Array, tz: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path for a column whose values all have the first value's length and layout (the
    usual case): digits are read straight from the bytes as an (n, width) matrix. Rows that break
    the layout go through the regex parser. None when the column does not qualify."""
    n = len(s)
    if n == 0 or s.null_count:
        return None
    first = s[0].as_py()
    m = re.match(_DT_RE, first)
    if m is None or not first.isascii():
        return None
    width = len(first)
    offsets = np.frombuffer(s.buffers()[1], dtype=np.int64 if pa.types.is_large_string(s.type)
                            else np.int32)[s.offset:s.offset + n + 1]
    if np.any(np.diff(offsets) != width):
        return None
    data = np.frombuffer(s.buffers()[2], dtype=np.uint8)
    mat = np.ascontiguousarray(data[offsets[0]:offsets[0] + n * width].reshape(n, width).T)
    template = np.frombuffer(first.encode(), dtype=np.uint8)
    literal = np.ones(width, dtype=bool)
    spans = {}
    for name in ("Y", "m", "d", "H", "M", "S", "f"):
        a, b = m.span(name)
        if a >= 0 and b > a:
            spans[name] = (a, b)
            literal[a:b] = False
    ok = np.ones(n, dtype=bool)
    for k in range(width):  # one character position at a time (rows of the transposed bytes)
        if literal[k]:
            ok &= mat[k] == template[k]
        else:
            ok &= (mat[k] - np.uint8(48)) <= 9  # uint8 wraps below '0'

    def field(name: str) -> np.ndarray:
        out = np.zeros(n, dtype=np.int32)  # every field has at most 9 digits
        a, b = spans.get(name, (0, 0))
        for k in range(a, b):
            np.multiply(out, 10, out=out)
            np.add(out, mat[k], out=out, casting="unsafe")
            np.subtract(out, 48, out=out)
        return out.astype(np.int64)

    frac = field("f")
    if "f" in spans:
        frac = frac * 10 ** (9 - (spans["f"][1] - spans["f"][0]))
    zone = m.group("z") or ""
    offset_s = 0
    if zone and zone != "Z":
        z = zone.replace(":", "")
        offset_s = (-1 if z[0] == "-" else 1) * (int(z[1:3]) * 3600 + int(z[3:5]) * 60)
    ns, valid = _fields_to_ns(field("Y"), field("m"), field("d"), field("H"), field("M"), field("S"),
                              frac, offset_s, ok)
    if not zone:
        ns = _localize(ns, valid, tz)
    rest = np.flatnonzero(~ok)
    if rest.size:  # rows with another layout: the general parser
        ns2, bad2 = _regex_datetimes(s.take(pa.array(rest)), tz)
        ns[rest], valid[rest] = ns2, ~bad2
    return ns, ~valid


def _regex_datetimes(s: pa.Array, tz: str) -> tuple[np.ndarray, np.ndarray]:
    parts = pc.extract_regex(s, pattern=_DT_RE)
    matched = parts.is_valid().to_numpy(zero_copy_only=False)

    def text(name: str) -> pa.Array:
        return pc.fill_null(parts.field(name), "")

    def num(name: str) -> np.ndarray:
        f = text(name)
        f = pc.if_else(pc.equal(f, ""), "0", f)
        return f.cast(pa.int64()).to_numpy(zero_copy_only=False)

    y, mo, d = num("Y"), num("m"), num("d")
    hh, mi, ss = num("H"), num("M"), num("S")
    frac = pc.utf8_rpad(text("f"), width=9, padding="0").cast(pa.int64()).to_numpy(zero_copy_only=False)
    z = pc.replace_substring(text("z"), ":", "")
    naive = pc.equal(z, "").to_numpy(zero_copy_only=False)
    z_ok = pc.fill_null(pc.match_substring_regex(z, r"^[+-]\d{4}$"), False)
    zz = pc.if_else(z_ok, z, "+0000")
    sign = np.where(pc.starts_with(zz, "-").to_numpy(zero_copy_only=False), -1, 1)
    zh = pc.utf8_slice_codeunits(zz, 1, 3).cast(pa.int64()).to_numpy(zero_copy_only=False)
    zm = pc.utf8_slice_codeunits(zz, 3, 5).cast(pa.int64()).to_numpy(zero_copy_only=False)
    offset_s = sign * (zh * 3600 + zm * 60)

    ns, valid = _fields_to_ns(y, mo, d, hh, mi, ss, frac, offset_s, matched & (zh <= 23) & (zm <= 59))
    ns = _localize(ns, naive & valid, tz)
    return ns, ~valid


def _fixed_width(fmt: str) -> int | None:
    widths = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2, "y": 2, "j": 3, "%": 1}
    width, i = 0, 0
    while i < len(fmt):
        if fmt[i] == "%":
            if i + 1 >= len(fmt) or fmt[i + 1] not in widths:
                return None
            width += widths[fmt[i + 1]]
            i += 2
        else:
            width += 1
            i += 1
    return width


def _strptime(s: pa.Array, fmt: str, tz: str) -> tuple[np.ndarray, np.ndarray]:
    frac = np.zeros(len(s), dtype=np.int64)
    frac_bad = np.zeros(len(s), dtype=bool)
    if fmt.endswith("%f"):
        fmt = fmt[:-2]
        width = _fixed_width(fmt)
        if width is not None:
            base, digits = pc.utf8_slice_codeunits(s, 0, width), pc.utf8_slice_codeunits(s, width)
        elif fmt and not fmt.endswith(tuple("%" + c for c in "aAbBcdHIjmMpSUwWxXyYzZ")):
            parts = pc.extract_regex(s, pattern=r"^(?P<b>.*" + re.escape(fmt[-1]) + r")(?P<f>.*)$")
            base, digits = parts.field("b"), parts.field("f")
        else:
            raise ValueError(f"ts_format {fmt + '%f'!r}: cannot tell where the %f digits start")
        ok = pc.fill_null(pc.match_substring_regex(digits, r"^\d{1,9}$"), False)
        frac_bad = ~ok.to_numpy(zero_copy_only=False)
        padded = pc.utf8_rpad(pc.if_else(ok, digits, "0"), width=9, padding="0")
        frac = padded.cast(pa.int64()).to_numpy(zero_copy_only=False)
        s = base
    parsed = pc.strptime(s, format=fmt, unit="ns", error_is_null=True)
    ns, bad = _from_timestamps(parsed, tz)
    bad = bad | frac_bad
    return np.where(bad, 0, ns + frac), bad
