"""Read a CSV or Parquet market-data file into role-named Arrow columns.

Steps: sniff the first 64 KiB (delimiter, header, field count), map roles (ts, price, size, side,
bid, ask, bid_size, ask_size, open, high, low, close, volume) to columns by config or by common
names, decide the kind (bars if open/high/low/close, quotes if bid/ask, trades if price; without a
header by the values: OHLC ordering, or two close positive columns as bid <= ask), then parse.

Happy path: `pyarrow.csv.read_csv` with explicit types (float64 for numbers, int64 for a time
column whose sampled values are all integers (epoch s/ms/us/ns: exact, no float64 on the way),
else text; dictionary-encoded text for the side) and `ignore_empty_lines=False`, so row i is
line i + 1 + header lines. If the integer time column does not hold (a corrupt row) it is read
again as text. On any parse error
(a corrupt field, a short row) the slow path reads the file as lines (a zero-copy Arrow string
array over the bytes), splits them with pyarrow.compute and keeps every field as text; rows with a
wrong field count are recorded with their line numbers and the text is converted per value later.
Quoted fields that contain the delimiter or a newline are not supported on the slow path.
Parquet rows are numbered from 1 in place of line numbers.

Blocks (`csv_blocks`, `parquet_blocks`): the same reads, one block at a time (pyarrow's streaming
CSV reader, Parquet record batches), so a file never has to fit in memory; `NeedWhole` where a
CSV needs the slow path (which reads the whole file).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from himari.daemon.feeds.base import MAX_MALFORMED_KEPT, FeedError
from himari.daemon.feeds.config import FeedConfig

KIND_ROLES = {
    "trades": (("ts", "price"), ("size", "side")),
    "quotes": (("ts", "bid", "ask"), ("bid_size", "ask_size", "size")),
    "bars": (("ts", "open", "high", "low", "close"), ("volume",)),
}
TEXT_ROLES = ("ts", "side")
_AUTO = {  # normalized names (lower case, letters and digits only), first match wins
    "ts": ("timestamp", "time", "ts", "datetime", "date", "tsevent", "tsrecv", "tsinit",
           "timestampns", "timestampms", "timestampus", "opentime", "localtimestamp", "dt"),
    "price": ("price", "px", "last", "lastprice", "tradeprice"),
    "bid": ("bid", "bidprice", "bestbid", "bidpx", "bid1"),
    "ask": ("ask", "askprice", "bestask", "askpx", "offer", "ask1"),
    "open": ("open", "o", "openprice"),
    "high": ("high", "h", "highprice"),
    "low": ("low", "l", "lowprice"),
    "close": ("close", "c", "closeprice"),
    "bid_size": ("bidsize", "bidqty", "bidvolume", "bidamount", "bidsz"),
    "ask_size": ("asksize", "askqty", "askvolume", "askamount", "asksz", "offersize"),
    "size": ("quantity", "qty", "size", "amount", "tradesize", "lastsize", "volume", "vol"),
    "volume": ("volume", "vol", "v", "basevolume", "quantity", "qty"),
    "side": ("buyermaker", "isbuyermaker", "side", "aggressorside", "takerside", "aggressor"),
}
_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INT = re.compile(r"^[+-]?(\d{1,18}|[1-8]\d{18})$")  # fits int64
_SIDE_TYPE = pa.dictionary(pa.int32(), pa.string())


@dataclass
class RawTable:
    path: str
    source: str  # "csv" | "parquet"
    kind: str
    columns: list[str]  # the file's column names (positions "0", "1", ... without a header)
    header: bool
    roles: dict[str, str]  # role -> file column name
    data: dict[str, pa.Array]  # role -> values (float64 or text) of the well-formed rows
    lines: np.ndarray  # int64 line number of each row in `data`
    bad_count: int = 0  # rows with a wrong field count
    bad_lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bad_reasons: list[str] = field(default_factory=list)
    blank: int = 0
    slow_path: bool = False
    guessed: bool = False  # the header's names were unknown: the values chose the columns


def norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def read_table(path: Path, cfg: FeedConfig) -> RawTable:
    if is_parquet(path):
        return _read_parquet(path, cfg)
    return _read_csv(path, cfg)


# ---- role mapping


def _explicit(columns: list[str], cfg: FeedConfig, path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    listing = ", ".join(columns)
    for role, ref in cfg.columns.mapped().items():
        if isinstance(ref, int):
            if ref >= len(columns):
                raise FeedError(f"feed.columns.{role} = {ref}: {path.name} has only {len(columns)} "
                                f"columns: {listing}")
            out[role] = ref
            continue
        matches = [i for i, c in enumerate(columns) if c == ref] or \
                  [i for i, c in enumerate(columns) if norm(c) == norm(ref)]
        if not matches:
            raise FeedError(f"feed.columns.{role} = {ref!r}: no column {ref!r} in {path.name}; "
                            f"its columns are: {listing}")
        out[role] = matches[0]
    return out


def _decide_kind(cfg: FeedConfig, roles: dict[str, int]) -> str | None:
    if cfg.format != "auto":
        return cfg.format
    if all(r in roles for r in ("open", "high", "low", "close")):
        return "bars"
    if "bid" in roles and "ask" in roles:
        return "quotes"
    if "price" in roles:
        return "trades"
    return None


def _by_name(columns: list[str], cfg: FeedConfig, path: Path,
             sample: list[list[str]] | None = None) -> tuple[str, dict[str, int], bool]:
    """-> (kind, roles, whether the values had to decide because the names did not)."""
    roles = _explicit(columns, cfg, path)
    normed = [norm(c) for c in columns]
    for role, names in _AUTO.items():
        if role in roles:
            continue
        taken = set(roles.values())
        for name in names:
            hits = [i for i, c in enumerate(normed) if c == name and i not in taken]
            if hits:
                roles[role] = hits[0]
                break
    if "ts" not in roles:
        hits = [i for i, c in enumerate(normed) if ("time" in c or "date" in c or c.startswith("ts"))
                and i not in roles.values()]
        if hits:
            roles["ts"] = hits[0]
    kind = _decide_kind(cfg, roles)
    if kind is None and sample:  # names never seen: the values decide (as without a header)
        try:
            return (*_by_values(columns, sample, roles, cfg, path), True)
        except FeedError:
            pass
    if kind is None:
        raise FeedError(f"{path.name}: cannot tell trades, quotes or bars from its columns "
                        f"({', '.join(columns)}); set feed.format and feed.columns")
    if kind == "bars" and "volume" not in roles and "size" in roles:
        roles["volume"] = roles["size"]
    if kind == "trades" and "size" not in roles and "volume" in roles:
        roles["size"] = roles["volume"]
    return kind, roles, False


def _floats(rows: list[list[str]], j: int) -> np.ndarray:
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):  # sniffed sample only (<= 200 rows)
        if j < len(row) and _NUM.match(row[j].strip().strip('"')):
            out[i] = float(row[j].strip().strip('"'))
    return out


def _by_position(ncols: int, sample: list[list[str]], cfg: FeedConfig,
                 path: Path) -> tuple[str, dict[str, int]]:
    columns = [str(i) for i in range(ncols)]
    return _by_values(columns, sample, _explicit(columns, cfg, path), cfg, path)


def _by_values(columns: list[str], sample: list[list[str]], roles: dict[str, int],
               cfg: FeedConfig, path: Path) -> tuple[str, dict[str, int]]:
    """Roles from the sampled values: time first (a time-like name, else the first column), then
    OHLC, bid <= ask or price by the numeric columns, and a text column with few distinct values
    as the side."""
    ncols = len(columns)
    roles = dict(roles)
    if "ts" not in roles:
        timeish = [j for j, c in enumerate(columns) if j not in roles.values() and
                   any(w in norm(c) for w in ("time", "date", "epoch", "zeit", "nanos", "ts"))]
        roles["ts"] = timeish[0] if timeish else 0
    free = [j for j in range(ncols) if j not in roles.values()]
    values = {j: _floats(sample, j) for j in free}
    numeric = [j for j in free if np.mean(np.isfinite(values[j])) >= 0.9]
    if "side" not in roles:
        for j in free:
            if j in numeric:
                continue
            words = {r[j].strip().strip('"').lower() for r in sample if j < len(r)}
            if 0 < len(words) <= 8 and all(len(w) <= 12 for w in words):
                roles["side"] = j
                break
    kind = _decide_kind(cfg, roles)
    if kind is None and len(numeric) >= 4:
        o, h, lo, c = (values[j] for j in numeric[:4])
        if np.mean((lo <= np.minimum(o, c)) & (h >= np.maximum(o, c))) >= 0.95 and np.any(h > lo):
            kind = "bars"
    if kind is None and len(numeric) >= 2:
        b, a = values[numeric[0]], values[numeric[1]]
        if np.mean((b > 0) & (b <= a) & (a <= 1.1 * b)) >= 0.95:
            kind = "quotes"
    if kind is None and numeric:
        kind = "trades"
    if kind is None:
        raise FeedError(f"{path.name}: no numeric columns found after the timestamp; "
                        "set feed.format and feed.columns")
    order = {"trades": ("price", "size"), "quotes": ("bid", "ask"),
             "bars": ("open", "high", "low", "close", "volume")}[kind]
    queue = [j for j in numeric if j not in roles.values()]
    for role in order:
        if role not in roles and queue:
            roles[role] = queue.pop(0)
    return kind, roles


def _check_required(kind: str, roles: dict[str, int], columns: list[str], path: Path) -> None:
    for role in KIND_ROLES[kind][0]:
        if role not in roles:
            raise FeedError(f"{path.name}: no {role} column for {kind} among: {', '.join(columns)}; "
                            f"name it with feed.columns.{role}")


def _used(kind: str, roles: dict[str, int]) -> dict[str, int]:
    need, optional = KIND_ROLES[kind]
    return {r: roles[r] for r in need + optional if r in roles}


# ---- CSV


def _sniff(path: Path, cfg: FeedConfig) -> tuple[str, list[list[str]], int]:
    """-> (delimiter, first rows split, number of leading blank lines)."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    lines = text.splitlines()
    if len(head) == 65536 and lines:
        lines = lines[:-1]  # the last line may be cut
    leading = 0
    while leading < len(lines) and not lines[leading].strip():
        leading += 1
    lines = [ln for ln in lines[leading:leading + 400] if ln.strip()][:200]
    if not lines:
        raise FeedError(f"{path.name}: the file is empty")
    delim = cfg.delimiter
    if delim == "auto":
        counts = {d: [ln.count(d) for ln in lines[:20]] for d in (",", ";", "\t", "|")}
        good = {d: c for d, c in counts.items() if c[0] > 0}
        delim = max(good, key=lambda d: (sum(x == good[d][0] for x in good[d]), good[d][0])) \
            if good else ","
    return delim, [ln.split(delim) for ln in lines], leading


@dataclass
class CsvPlan:
    """How to read a CSV (sniffed once): what `_read_csv` and `csv_blocks` both use."""

    raw: RawTable  # the empty table: kind, columns, header, roles
    used: dict[str, int]
    delim: str
    skip: int
    names: list[str]
    types: dict[str, pa.DataType]
    ts_col: str


def plan_csv(path: Path, cfg: FeedConfig) -> CsvPlan:
    delim, rows, leading = _sniff(path, cfg)
    first = [f.strip().strip('"').strip() for f in rows[0]]
    header = (cfg.header == "yes" or
              (cfg.header == "auto" and not any(_NUM.match(f) for f in first)))
    data_rows = rows[1:] if header else rows
    counts = [len(r) for r in data_rows] or [len(first)]
    ncols = max(set(counts), key=counts.count)  # the usual field count (a corrupt row may lead)
    if header:
        columns = first + [str(i) for i in range(len(first), ncols)]
        kind, roles, guessed = _by_name(columns, cfg, path, data_rows)
    else:
        columns = [str(i) for i in range(ncols)]
        kind, roles = _by_position(ncols, data_rows, cfg, path)
        guessed = False
    _check_required(kind, roles, columns, path)
    used = _used(kind, roles)
    skip = leading + (1 if header else 0)
    names = [f"c{i}" for i in range(max(ncols, len(columns)))]
    types = {names[j]: (pa.float64() if r not in TEXT_ROLES else _SIDE_TYPE if r == "side"
                        else pa.string()) for r, j in used.items()}
    ts_col = names[used["ts"]]
    if _integer_times(data_rows, used["ts"], cfg):
        types[ts_col] = pa.int64()
    raw = RawTable(path=str(path), source="csv", kind=kind, columns=columns, header=header,
                   roles={r: columns[j] for r, j in used.items()}, data={}, lines=np.zeros(0, np.int64))
    raw.guessed = guessed
    return CsvPlan(raw, used, delim, skip, names, types, ts_col)


def _csv_options(plan: CsvPlan, block_bytes: int) -> dict[str, object]:
    return dict(
        read_options=pacsv.ReadOptions(column_names=plan.names, skip_rows=plan.skip,
                                       block_size=block_bytes),
        parse_options=pacsv.ParseOptions(delimiter=plan.delim, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            include_columns=sorted(plan.types), column_types=plan.types, null_values=[""],
            strings_can_be_null=True, quoted_strings_can_be_null=True))


def _csv_part(plan: CsvPlan, table: pa.Table | pa.RecordBatch, first_line: int) -> RawTable:
    """Rows of one read (the whole file or a block) as a RawTable; row i is line first_line + i."""
    cols = {r: _whole_column(table, plan.names[j]) for r, j in plan.used.items()}
    lines = np.arange(first_line, first_line + table.num_rows, dtype=np.int64)
    blank = np.ones(table.num_rows, dtype=bool)
    for arr in cols.values():
        blank &= arr.is_null().to_numpy(zero_copy_only=False)
    if blank.any():
        keep = pa.array(~blank)
        cols = {r: a.filter(keep) for r, a in cols.items()}
        lines = lines[~blank]
    raw = dataclasses.replace(plan.raw)
    raw.data, raw.lines, raw.blank = cols, lines, int(blank.sum())
    return raw


def _whole_column(table: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _read_csv(path: Path, cfg: FeedConfig) -> RawTable:
    plan = plan_csv(path, cfg)
    while True:
        try:
            table = pacsv.read_csv(path, **_csv_options(plan, 1 << 22))  # type: ignore[arg-type]
            break
        except pa.ArrowInvalid:
            if plan.types[plan.ts_col] == pa.int64():  # a corrupt time somewhere: text, per row
                plan.types[plan.ts_col] = pa.string()
                continue
            return _read_csv_lines(path, plan.raw, plan.used, plan.delim, plan.skip, len(plan.names))
    return _csv_part(plan, table, plan.skip + 1)


class NeedWhole(Exception):
    """The block reader cannot read this file (a corrupt row needs the whole-file slow path)."""


def csv_blocks(path: Path, cfg: FeedConfig, block_bytes: int,
               plan: CsvPlan | None = None, mode: int = 0) -> Iterator[RawTable]:
    """The CSV in blocks of about `block_bytes`, each a RawTable with its own line numbers, read
    as `_read_csv` reads the whole file: mode 0 with the planned types (pyarrow's streaming
    reader), 1 with the time as text, 2 as lines (the slow path). NeedWhole where the mode does
    not hold for the file (the caller starts again with the next mode)."""
    plan = dataclasses.replace(plan or plan_csv(path, cfg))
    plan.types = dict(plan.types)
    if mode == 2:
        yield from csv_line_blocks(path, plan, block_bytes)
        return
    if mode == 1:
        if plan.types[plan.ts_col] != pa.int64():
            raise NeedWhole("the time column is text already")
        plan.types[plan.ts_col] = pa.string()
    line = plan.skip + 1
    try:
        reader = pacsv.open_csv(path, **_csv_options(plan, block_bytes))  # type: ignore[arg-type]
        for batch in reader:
            yield _csv_part(plan, batch, line)
            line += batch.num_rows
    except pa.ArrowInvalid as exc:
        raise NeedWhole(str(exc)) from exc


def _integer_times(rows: list[list[str]], j: int, cfg: FeedConfig) -> bool:
    if cfg.ts_format or cfg.ts_unit == "iso":
        return False
    values = [r[j].strip().strip('"').strip() for r in rows[:200] if j < len(r)]
    return bool(values) and all(_INT.match(v) for v in values)


def _line_array(data: bytes) -> pa.Array:
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    offsets = np.concatenate(([0], nl + 1, [len(data)])).astype(np.int64)
    if offsets[-2] == len(data):  # the text ends with a newline
        offsets = offsets[:-1]
    lines = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid:  # invalid UTF-8: replace bad bytes, keep line structure
        fixed = data.decode("utf-8", "replace").encode("utf-8")
        return _line_array_from(fixed)
    return pc.utf8_rtrim(lines, characters="\r\n")


def _line_array_from(data: bytes) -> pa.Array:
    arr = pa.array(data.split(b"\n"), type=pa.large_binary()).cast(pa.large_string())
    if len(arr) and data.endswith(b"\n"):
        arr = arr.slice(0, len(arr) - 1)
    return pc.utf8_rtrim(arr, characters="\r\n")


def _read_csv_lines(path: Path, raw: RawTable, used: dict[str, int], delim: str, skip: int,
                    ncols: int) -> RawTable:
    return _lines_part(_line_array(path.read_bytes()), skip, skip + 1, True, raw, used, delim,
                       ncols)


def csv_line_blocks(path: Path, plan: CsvPlan, block_bytes: int) -> Iterator[RawTable]:
    """The slow path by blocks of whole lines (about `block_bytes` each)."""
    number, skip, first = plan.skip + 1, plan.skip, True
    with open(path, "rb") as fh:
        rest = b""
        while True:
            chunk = fh.read(block_bytes)
            data = rest + chunk
            if chunk:
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # no line end yet: read on
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            elif not data:
                return
            lines = _line_array(data)
            part = _lines_part(lines, skip, number, first, dataclasses.replace(plan.raw),
                               plan.used, plan.delim, len(plan.names))
            number += len(lines) - skip
            skip, first = 0, False
            yield part
            if not chunk:
                return


def _lines_part(lines: pa.Array, skip: int, number: int, first: bool, raw: RawTable,
                used: dict[str, int], delim: str, ncols: int) -> RawTable:
    """Lines (after `skip` leading ones; the first kept is line `number`) split into fields."""
    if skip:
        lines = lines.slice(skip)
    numbers = np.arange(number, number + len(lines), dtype=np.int64)
    if len(lines) and skip == 0 and first:  # a BOM on line 1
        lines = pa.concat_arrays([pc.utf8_ltrim(lines.slice(0, 1), characters="\ufeff"), lines.slice(1)])
    blank = pc.equal(pc.utf8_trim_whitespace(lines), "").to_numpy(zero_copy_only=False)
    nfields = pc.add(pc.count_substring(lines, delim), 1).to_numpy(zero_copy_only=False)
    ok = ~blank & (nfields == ncols)
    bad = ~blank & ~ok
    bad_idx = np.flatnonzero(bad)
    raw.bad_count = int(bad_idx.size)
    raw.bad_lines = numbers[bad_idx[:MAX_MALFORMED_KEPT]]
    raw.bad_reasons = [f"expected {ncols} fields, got {int(k)}"
                       for k in nfields[bad_idx[:MAX_MALFORMED_KEPT]]]
    good = lines.filter(pa.array(ok))
    parts = pc.split_pattern(good, delim)
    data = {}
    for role, j in used.items():
        values = pc.utf8_trim(pc.list_element(parts, j), characters=" \t\"")
        data[role] = pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
    raw.data, raw.lines, raw.blank, raw.slow_path = data, numbers[ok], int(blank.sum()), True
    return raw


# ---- Parquet


def plan_parquet(path: Path, cfg: FeedConfig) -> tuple[pq.ParquetFile, RawTable, dict[str, int]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeedError(f"{path.name}: not a readable Parquet file ({exc})") from exc
    columns = list(pf.schema_arrow.names)
    kind, roles, _ = _by_name(columns, cfg, path)
    _check_required(kind, roles, columns, path)
    used = _used(kind, roles)
    raw = RawTable(path=str(path), source="parquet", kind=kind, columns=columns, header=True,
                   roles={r: columns[j] for r, j in used.items()}, data={},
                   lines=np.zeros(0, np.int64))
    return pf, raw, used


def _parquet_part(raw: RawTable, used: dict[str, int], table: pa.Table | pa.RecordBatch,
                  first_row: int) -> RawTable:
    data = {}
    for role, j in used.items():
        arr = _whole_column(table, raw.columns[j])
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        data[role] = arr
    part = dataclasses.replace(raw)
    part.data = data
    part.lines = np.arange(first_row, first_row + table.num_rows, dtype=np.int64)
    return part


def _read_parquet(path: Path, cfg: FeedConfig) -> RawTable:
    pf, raw, used = plan_parquet(path, cfg)
    table = pf.read(columns=sorted({raw.columns[j] for j in used.values()}))
    return _parquet_part(raw, used, table, 1)


def parquet_blocks(path: Path, cfg: FeedConfig, block_rows: int) -> Iterator[RawTable]:
    """The Parquet file in record batches of at most `block_rows` rows (row groups are read one
    at a time), rows numbered from 1 as in `_read_parquet`."""
    pf, raw, used = plan_parquet(path, cfg)
    pf = open_parquet_stream(path)
    row = 1
    for batch in pf.iter_batches(batch_size=block_rows,
                                 columns=sorted({raw.columns[j] for j in used.values()})):
        yield _parquet_part(raw, used, batch, row)
        row += batch.num_rows


def open_parquet_stream(path: Path) -> pq.ParquetFile:
    """A Parquet file for reading batch by batch: no pre-buffering (it would read every row
    group at once) and buffered page reads, so memory holds about a batch, not the file."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)


def table_kind(path: Path, cfg: FeedConfig) -> str:
    """trades, quotes or bars, from the header (or sampled values) alone."""
    if is_parquet(path):
        return plan_parquet(path, cfg)[1].kind
    return plan_csv(path, cfg).raw.kind


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq", ".parq")
