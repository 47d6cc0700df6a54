"""Rows of a data file (the whole file or one block) to checked, gridded integer columns.

`convert` parses the times, checks every number, puts prices and sizes on their grids (a given
tick, or the greatest common step of the valid prices; the lot the coarsest power of ten that
every size fits) and records the malformed rows (the first 100 with their line and reason) in the
feed's statistics, adding to what they hold, so that blocks of a file add up to the file.
`order_rows` applies the time-order policy, carrying the latest time from block to block.
`tick_batch` makes the TickBatch of trades or quotes. See files.py for the rules themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from himari.daemon.events import TickBatch
from himari.daemon.feeds.base import MAX_MALFORMED_KEPT, FeedError, FeedStats
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.tables import RawTable, norm
from himari.daemon.feeds.timeparse import parse_timestamps
from himari.daemon.feeds.values import infer_step, infer_tick, to_float, to_grid, to_side

PRICE_ROLES = {"trades": ("price",), "quotes": ("bid", "ask"),
               "bars": ("open", "high", "low", "close")}


class _Problems:
    """Row checks in priority order; reasons are formatted only for the first 100 bad rows."""

    def __init__(self, raw: RawTable) -> None:
        self.raw = raw
        self.bad = np.zeros(len(raw.lines), dtype=bool)
        self._checks: list[tuple[np.ndarray, str, str | tuple[str, ...] | None]] = []

    def add(self, mask: np.ndarray, reason: str, role: str | tuple[str, ...] | None = None) -> None:
        self._checks.append((mask, reason, role))
        self.bad |= mask

    def _value(self, role: str | tuple[str, ...] | None, i: int) -> str:
        if role is None:
            return ""
        if isinstance(role, tuple):
            return ", ".join(f"{r}={self.raw.data[r][i].as_py()!r}" for r in role)
        return repr(self.raw.data[role][i].as_py())

    def record(self, stats: FeedStats) -> None:
        found: list[tuple[int, str]] = []
        for i in np.flatnonzero(self.bad)[:MAX_MALFORMED_KEPT].tolist():
            for mask, reason, role in self._checks:
                if mask[i]:
                    found.append((int(self.raw.lines[i]), reason.format(v=self._value(role, i))))
                    break
        found += list(zip(self.raw.bad_lines.tolist(), self.raw.bad_reasons))
        found.sort(key=lambda x: x[0])
        lines = np.array([f[0] for f in found], dtype=np.int64)
        stats.add_malformed(lines, [f[1] for f in found], self.raw.bad_count + int(self.bad.sum()))


def _number_checks(probs: _Problems, role: str, *, price: bool) -> np.ndarray:
    values, missing, unparseable = to_float(probs.raw.data[role])
    probs.add(missing, f"missing {role}")
    probs.add(unparseable, f"unparseable {role} {{v}}", role)
    probs.add(~missing & ~unparseable & ~np.isfinite(values), f"non-finite {role} {{v}}", role)
    with np.errstate(invalid="ignore"):
        if price:
            probs.add(values <= 0, f"non-positive {role} {{v}}", role)
        else:
            probs.add(values < 0, f"negative {role} {{v}}", role)
    return values


def _grid(probs: _Problems, values: dict[str, np.ndarray], step: Decimal | None,
          what: str, stats: FeedStats) -> tuple[dict[str, np.ndarray], Decimal]:
    """Convert to int multiples of `step` (inferred from the good rows if None)."""
    if not values:
        return {}, step or Decimal(1)
    good = ~probs.bad
    exact = step is not None
    if step is None:
        infer = infer_tick if what == "tick" else infer_step
        every = bool(good.all())
        vals = list(values.values())
        step, _ = infer(vals[0] if every and len(vals) == 1 else
                        np.concatenate([v if every else v[good] for v in vals]))
    out = {}
    off_rows = np.zeros(len(good), dtype=bool)
    for role, v in values.items():
        ints, on_grid = to_grid(v, step)
        off_rows |= good & ~on_grid & np.isfinite(v)
        if what == "tick":
            if exact:
                probs.add(good & ~on_grid, f"{role} {{v}} is not a multiple of the tick size {step}", role)
            probs.add(good & (ints <= 0), f"{role} {{v}} does not fit the tick size {step}", role)
        out[role] = ints  # sizes are rounded to the nearest lot (counted), never rejected for it
    if what == "tick":
        stats.off_tick += int(off_rows.sum())
    else:
        stats.off_lot += int(off_rows.sum())
    return out, step


class NeedSort(Exception):
    """Rows out of time order under out_of_order = "sort": only a whole-file read can sort."""


def order_rows(raw: RawTable, ts: np.ndarray, idx: np.ndarray, cfg: FeedConfig, strict: bool,
               stats: FeedStats, before: int | None = None,
               streaming: bool = False) -> tuple[np.ndarray, int | None]:
    """Apply the out-of-order policy to the good rows `idx` (after rows whose latest time was
    `before`) -> (the rows to keep, in order; the latest time kept)."""
    if idx.size == 0:
        return idx, before
    if idx.size == 1 and before is None:
        return idx, int(ts[idx[0]])
    t = ts[idx]
    run = np.maximum.accumulate(t if before is None else np.concatenate(([before], t)))
    prev_max = run[:-1] if before is None else run[:-1]
    t_cmp = t[1:] if before is None else t
    late_tail = t_cmp <= prev_max if strict else t_cmp < prev_max
    late = np.concatenate(([False], late_tail)) if before is None else late_tail
    latest = int(run[-1])
    n_late = int(late.sum())
    if n_late == 0:
        return idx, latest
    if cfg.out_of_order == "fail":
        k = int(np.flatnonzero(late)[0])
        line = int(raw.lines[idx[k]])
        raise FeedError(f"{Path(raw.path).name}: line {line} (ts {np.datetime64(int(t[k]), 'ns')}) is "
                        f"{'not after' if strict else 'older than'} an earlier row "
                        "(feed.out_of_order = 'fail'; use 'drop' or 'sort')")
    if cfg.out_of_order == "sort" and streaming:
        raise NeedSort
    stats.out_of_order += n_late
    if cfg.out_of_order == "drop":
        return idx[~late], latest
    idx = idx[np.argsort(t, kind="stable")]
    if strict:  # sorted bars: a repeated bar time is still dropped
        t = ts[idx]
        idx = idx[np.concatenate(([True], t[1:] > t[:-1]))]
    return idx, latest


@dataclass
class Parsed:
    """One read (the whole file or a block) converted and checked; arrays cover every row."""

    ts: np.ndarray
    ts_bad: np.ndarray
    ticks: dict[str, np.ndarray]
    tick: Decimal
    lots: dict[str, np.ndarray]
    lot: Decimal
    side: np.ndarray | None
    side_unknown: np.ndarray | None
    good: np.ndarray  # indices of the rows that passed every check
    inferred_from: np.ndarray  # the rows the grid was inferred from (mask)
    price_roles: tuple[str, ...]


def convert(raw: RawTable, cfg: FeedConfig, tick_size: Decimal | None, lot_size: Decimal | None,
            stats: FeedStats) -> Parsed:
    """Parse times, check numbers, put prices and sizes on their grids (inferred when None),
    record the malformed rows in `stats` (added to what it holds)."""
    stats.rows += len(raw.lines) + raw.bad_count
    stats.blank += raw.blank
    probs = _Problems(raw)
    try:
        ts, ts_bad = parse_timestamps(raw.data["ts"], cfg.ts_unit, cfg.ts_format, cfg.timezone)
    except ValueError as exc:
        raise FeedError(f"{Path(raw.path).name}: {exc}") from exc
    ts_missing = raw.data["ts"].is_null().to_numpy(zero_copy_only=False)
    probs.add(ts_missing, "missing timestamp")
    probs.add(ts_bad & ~ts_missing, "unparseable timestamp {v}", "ts")

    price_roles = PRICE_ROLES[raw.kind]
    size_roles = [r for r in ("size", "volume", "bid_size", "ask_size") if r in raw.data]
    prices = {r: _number_checks(probs, r, price=True) for r in price_roles}
    sizes = {r: _number_checks(probs, r, price=False) for r in size_roles}
    side = side_unknown = None
    if "side" in raw.data:
        col = raw.roles["side"]
        maker = (cfg.side_semantics == "buyer_maker" or
                 (cfg.side_semantics == "auto" and "maker" in norm(col)))
        side, side_unknown = to_side(raw.data["side"], maker, cfg.side_codes)
    inferred_from = ~probs.bad
    ticks, tick = _grid(probs, prices, tick_size, "tick", stats)
    lots, lot = _grid(probs, sizes, lot_size, "lot", stats)
    if raw.kind == "quotes":
        probs.add(~probs.bad & (ticks["bid"] > ticks["ask"]), "bid > ask: {v}", ("bid", "ask"))
    if raw.kind == "bars":
        o, h, lo, c = (ticks[r] for r in price_roles)
        good = ~probs.bad
        probs.add(good & (lo > np.minimum(o, c)), "bar low > min(open, close): {v}", price_roles)
        probs.add(good & (h < np.maximum(o, c)), "bar high < max(open, close): {v}", price_roles)
    probs.record(stats)
    return Parsed(ts, ts_bad, ticks, tick, lots, lot, side, side_unknown,
                  np.flatnonzero(~probs.bad), inferred_from, price_roles)


def tick_batch(kind: str, instrument_id: str, ts: np.ndarray, ticks: dict[str, np.ndarray],
               lots: dict[str, np.ndarray], side: np.ndarray | None) -> TickBatch:
    """Trades or quotes (rows already picked and in order) as a TickBatch."""
    if not ts.flags.writeable:  # Arrow's zero-copy times: a read-only array is another Numba
        ts = ts.copy()  # type, and every kernel would compile again for it
    if kind == "trades":
        size = lots["size"] if "size" in lots else np.zeros(len(ts), np.int64)
        return TickBatch.from_trades(instrument_id, ts, ticks["price"], size, side)
    qs = [lots[r] for r in ("bid_size", "ask_size") if r in lots]
    size = (np.minimum(*qs) if len(qs) == 2 else qs[0] if qs
            else lots["size"] if "size" in lots else None)
    return TickBatch.from_quotes(instrument_id, ts, ticks["bid"], ticks["ask"], size)


def unknown_codes(raw: RawTable, rows: np.ndarray, seen: list[str]) -> None:
    """Add the first distinct unknown side codes of `rows` to `seen` (at most 10 in all)."""
    if len(seen) >= 10 or rows.size == 0:
        return
    codes = pa.array(raw.data["side"]).take(pa.array(rows[:100_000]))
    if pa.types.is_dictionary(codes.type):
        codes = codes.dictionary_decode()
    for c in pc.unique(codes).to_pylist():
        if str(c) not in seen and len(seen) < 10:
            seen.append(str(c))
