"""Streamed file feeds: trades and quotes read block by block, never held whole.

Opening a file is one pass over its blocks (tables.csv_blocks / parquet_blocks): each block is
converted and checked exactly as a whole-file read would (files.convert), rows out of time order
are handled with the latest time carried from block to block, and only counts, the first and last
time, the statistics and the grid are kept. `batches()` then reads the blocks again (or the
catalog's Parquet copy, written during the first pass) and yields them on the file's grid.

The grid: with a tick given, every block uses it. Inferred, each block's prices are put on that
block's own grid and the file's tick is the greatest common step of the blocks' grids (a block
with a single distinct price contributes that price, as a whole-file inference would see it); a
block's integers are moved to the file's grid by an exact ratio (`Ratio`: times num, divided by
den, exact because every kept price is a multiple of the file's tick). Sizes likewise (the lot is
the finest block lot, a power of ten). So a streamed read yields the same ticks, statistics and
description as a whole-file read of the same file, at any block size.

Read whole instead (returns None): bars (their period is the median step of all bar times), a CSV
that needs the slow path, and out_of_order = "sort" on a file that is not in time order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from himari.daemon.events import TickBatch, TickKind
from himari.daemon.feeds.base import FeedStats
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.files import (BLOCK_ROWS, FeedError, FileFeed, describe_text,
                                       nothing_usable)
from himari.daemon.feeds.rows import NeedSort, convert, order_rows, tick_batch, unknown_codes
from himari.daemon.feeds.tables import (NeedWhole, RawTable, csv_blocks, is_parquet,
                                        parquet_blocks, plan_csv, plan_parquet)
from himari.daemon.feeds.values import decimal_gcd
from himari.daemon.instruments import Instrument


class Ratio(NamedTuple):
    """How many rows of blocks on a grid that is num/den of the file's (price, size)."""

    rows: int
    tick_num: int
    tick_den: int
    lot_num: int
    lot_den: int


def _scale(a: np.ndarray, num: int, den: int) -> np.ndarray:
    if num == den:
        return a
    return a * num // den if den != 1 else a * num


def to_file_grid(batch: TickBatch, r: Ratio) -> TickBatch:
    """A block's batch moved onto the file's grid (a quote's mid is recomputed there)."""
    if (r.tick_num, r.tick_den, r.lot_num, r.lot_den) == (1, 1, 1, 1):
        return batch
    size = _scale(batch.size, r.lot_num, r.lot_den)
    if batch.kind == TickKind.QUOTES:
        return TickBatch.from_quotes(batch.instrument_id, batch.ts_ns,
                                     _scale(batch.bid, r.tick_num, r.tick_den),
                                     _scale(batch.ask, r.tick_num, r.tick_den), size)
    return TickBatch.from_trades(batch.instrument_id, batch.ts_ns,
                                 _scale(batch.price, r.tick_num, r.tick_den), size, batch.side)


def runs_apply(batches: Iterator[TickBatch], runs: list[Ratio]) -> Iterator[TickBatch]:
    """Cut `batches` (consecutive rows, as many as the runs hold) at the runs' boundaries and
    put each piece on the file's grid."""
    if not runs:
        yield from batches
        return
    k, left = 0, runs[0].rows
    for batch in batches:
        start, n = 0, len(batch)
        while start < n:
            while left == 0 and k + 1 < len(runs):
                k += 1
                left = runs[k].rows
            take = min(left, n - start) if left > 0 else n - start
            piece = batch if (start, take) == (0, n) else batch.slice(start, start + take)
            yield to_file_grid(piece, runs[k])
            start += take
            left -= take


class _Grid:
    """The file's tick and lot from the blocks' grids (see the module docstring)."""

    def __init__(self, tick: Decimal | None, lot: Decimal | None) -> None:
        self.given_tick, self.given_lot = tick, lot
        self.parts: list[Decimal] = []  # block ticks, or a constant block's single price
        self.distinct = False
        self.single: Decimal | None = None
        self.first_tick: Decimal | None = None
        self.lots: list[Decimal] = []

    def add(self, p: Any) -> None:
        self.lots.append(p.lot)
        if self.given_tick is not None or not p.inferred_from.any():
            return
        vals = np.concatenate([p.ticks[r][p.inferred_from] for r in p.price_roles])
        lo, hi = int(vals.min()), int(vals.max())
        self.first_tick = self.first_tick or p.tick
        if lo != hi:
            self.distinct = True
            self.parts.append(p.tick)
            return
        value = (p.tick * lo).normalize()
        self.parts.append(value)
        if self.single is None:
            self.single = value
        elif value != self.single:
            self.distinct = True

    def tick(self) -> Decimal:
        if self.given_tick is not None:
            return self.given_tick
        if not self.parts:
            return Decimal(1)
        return decimal_gcd(self.parts) if self.distinct else self.first_tick  # type: ignore[return-value]

    def lot(self) -> Decimal:
        if self.given_lot is not None:
            return self.given_lot
        return min(self.lots) if self.lots else Decimal(1)


def _ratio(rows: int, block_tick: Decimal, tick: Decimal, block_lot: Decimal,
           lot: Decimal) -> Ratio:
    t = Fraction(block_tick) / Fraction(tick)
    s = Fraction(block_lot) / Fraction(lot)
    return Ratio(rows, t.numerator, t.denominator, s.numerator, s.denominator)


def _merge_runs(runs: list[Ratio]) -> list[Ratio]:
    out: list[Ratio] = []
    for r in runs:
        if r.rows == 0:
            continue
        if out and out[-1][1:] == r[1:]:
            out[-1] = out[-1]._replace(rows=out[-1].rows + r.rows)
        else:
            out.append(r)
    return out


def _kept(raw: RawTable, p: Any, keep: np.ndarray, instrument_id: str) -> TickBatch:
    """The kept rows of a block as a batch on the block's own grid."""
    whole = keep.size == len(p.ts) and (keep.size < 2 or bool(np.all(keep[1:] > keep[:-1])))

    def pick(a: np.ndarray) -> np.ndarray:
        return a if whole else a[keep]

    return tick_batch(raw.kind, instrument_id, pick(p.ts), {r: pick(v) for r, v in p.ticks.items()},
                      {r: pick(v) for r, v in p.lots.items()},
                      pick(p.side) if p.side is not None else None)


def _scan(raws: Callable[[], Iterator[RawTable]], cfg: FeedConfig, instrument_id: str,
          tick_size: Decimal | None, lot_size: Decimal | None, sink: Any) -> tuple[Any, ...]:
    """The opening pass -> (stats, grid, each block's (rows kept, tick, lot), (count, first
    time, last time), the roles present)."""
    stats = FeedStats()
    grid = _Grid(tick_size, lot_size)
    block_grids: list[tuple[int, Decimal, Decimal]] = []
    count, first, last = 0, 0, 0
    before: int | None = None
    present: set[str] = set()
    for raw in raws():
        present |= set(raw.data)
        p = convert(raw, cfg, tick_size, lot_size, stats)
        keep, before = order_rows(raw, p.ts, p.good, cfg, False, stats, before, streaming=True)
        grid.add(p)
        block_grids.append((int(keep.size), p.tick, p.lot))
        if keep.size:
            if count == 0:
                first = int(p.ts[keep[0]])
            last = int(p.ts[keep[-1]])
            count += int(keep.size)
            if p.side_unknown is not None:
                unknown = keep[p.side_unknown[keep]]
                stats.side_unknown += int(unknown.size)
                unknown_codes(raw, unknown, stats.side_codes_unknown)
            if sink is not None:
                sink.write(_kept(raw, p, keep, instrument_id))
    return stats, grid, block_grids, (count, first, last), present


def open_streaming(path: Path, cfg: FeedConfig, instrument_id: str, tick_size: Decimal | None,
                   lot_size: Decimal | None, block_bytes: int, sink: Any = None) -> FileFeed | None:
    """The file as a streamed FileFeed, or None where it must be read whole. `sink` (the catalog
    writer) gets each block's kept ticks on the block's grid (`write(batch)`)."""
    if is_parquet(path):
        template = plan_parquet(path, cfg)[1]
        modes: list[Callable[[], Iterator[RawTable]]] = [
            lambda: parquet_blocks(path, cfg, BLOCK_ROWS)]
    else:
        plan = plan_csv(path, cfg)
        template = plan.raw
        modes = [lambda m=m: csv_blocks(path, cfg, block_bytes, plan, m)  # type: ignore[misc]
                 for m in (0, 1, 2)]
    if template.kind == "bars":
        return None
    for raws in modes:  # as the whole-file read: planned types, time as text, lines
        try:
            scan = _scan(raws, cfg, instrument_id, tick_size, lot_size, sink)
            break
        except (NeedWhole, NeedSort, FeedError) as exc:
            if sink is not None:
                sink.abort()  # nothing half-written stays in the catalog
            if isinstance(exc, FeedError):
                raise
            if isinstance(exc, NeedSort):
                return None
    else:
        return None
    stats, grid, block_grids, (count, first, last), present = scan
    template = dataclasses.replace(template, data={r: None for r in present})  # roles present
    if count == 0:
        if sink is not None:
            sink.abort()
        raise FeedError(nothing_usable(path.name, template, stats))
    tick, lot = grid.tick(), grid.lot()
    runs = _merge_runs([_ratio(n, bt, tick, bl, lot) for n, bt, bl in block_grids])
    stats.ticks = count

    def reread() -> Iterator[TickBatch]:
        scratch, prev = FeedStats(), None
        for raw in raws():
            p = convert(raw, cfg, tick_size, lot_size, scratch)
            keep, prev = order_rows(raw, p.ts, p.good, cfg, False, scratch, prev)
            if keep.size:
                yield _kept(raw, p, keep, instrument_id)

    feed = FileFeed(path=str(path), instrument=Instrument(id=instrument_id, tick_size=tick,
                                                          lot_size=lot, currency=cfg.currency),
                    kind=template.kind, describe=describe_text(template, cfg, stats, count, tick,
                                                               lot, None),
                    ticks=None, stats=stats, batch_size=cfg.batch_size, bar_seconds=None,
                    roles=dict(template.roles), blocks=lambda: runs_apply(reread(), runs),
                    span=(count, first, last))
    feed.grid_runs = runs
    return feed


def reader(make: Callable[[], Iterator[TickBatch]], runs: list[Ratio]) -> Callable[[], Iterator[TickBatch]]:
    """A FileFeed `blocks` factory over stored blocks (`make`) with their grid runs."""
    return lambda: runs_apply(make(), runs)
