"""Replay a recorded data file (trades, quotes or bars; CSV or Parquet) as `TickBatch`es.

`open_file_feed` converts every column with vectorized numpy (rows.py) and validates. A file over
STREAM_ABOVE bytes (trades or quotes) is streamed (blocks.py): read in blocks of BLOCK_BYTES, never
held whole, with exactly the ticks, grid, statistics and description of a whole read. A smaller
file, bars, or an unsorted file under out_of_order = "sort" is read whole (tables.py) into one
TickBatch that `batches()` slices (views, no copies).

Malformed rows are counted and skipped with their line numbers (first 100 kept with a reason):
unparseable or missing field, a field-count mismatch, non-finite or non-positive price, negative or
non-finite size, a price off the given tick grid, bid > ask, or a bar with L > min(O, C) or
H < max(O, C) (spec features.md 1.8 and 5.1).

Grid: the tick size comes from the caller or is inferred as the greatest common step of the valid
prices (values.infer_tick: a 0.25 grid quoted with two decimals has tick 0.25); the lot size is the
coarsest power of ten (at most 1) that every size fits (1 when there are none). A price off a given
tick is a malformed row, counted (`off_tick`), never rounded; a size off the lot is rounded to the
nearest lot and counted (`off_lot`).

Side: a code the feed does not know (nor `feed.side_codes`) replays as side 0 and is counted
(`side_unknown`, with the first codes in `side_codes_unknown`): the trade is kept.

A file with no usable row (a header only, or every row malformed) is a FeedError naming the file
and its first bad lines: a replay of zero ticks is never a success.

Time order (`out_of_order`): "drop" skips a row older than the latest accepted one (for bars also a
repeated bar time), "sort" stably sorts by time, "fail" raises FeedError naming the line.

Bars as ticks: a bar with open time t0 and period D becomes four ticks at t0, t0 + D//4, t0 + D//2,
t0 + 3D//4: open, then low then high if it closed up (C >= O) else high then low, then close. Its
volume V (lots) is split V//4 per tick with the remainder on the close tick; no volume column gives
size 0. The bar time is the open time (`bar_ts = "open"`) or the close time minus D ("close"); D
is `bar_seconds` or the median positive step between bar times. Synthesized ticks carry side 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from himari.daemon.events import TickBatch
from himari.daemon.feeds.base import FeedError, FeedStats, plural
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.rows import convert, order_rows, tick_batch, unknown_codes
from himari.daemon.feeds.tables import RawTable, read_table
from himari.daemon.instruments import Instrument

__all__ = ["FeedError", "FileFeed", "bars_to_ticks", "open_file_feed"]
BLOCK_BYTES = 1 << 22  # CSV bytes per block of a streamed read (~100k ticks)
BLOCK_ROWS = 1 << 17  # Parquet rows per block
STREAM_ABOVE = 64 << 20  # files larger than this are streamed (smaller ones are read at once)


class FileFeed:
    """One file's ticks, replayed in batches of `batch_size`. The ticks are held whole (`ticks`:
    bars, a file read at once) or re-read block by block on each `batches()` (`blocks`: a
    streamed file; `count`, `first_ts` and `last_ts` then come from the opening pass)."""

    def __init__(self, *, path: str, instrument: Instrument, kind: str, describe: str,
                 ticks: TickBatch | None, stats: FeedStats, batch_size: int,
                 bar_seconds: float | None, roles: dict[str, str] | None = None,
                 blocks: Callable[[], Iterator[TickBatch]] | None = None,
                 span: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.path = path
        self.roles = roles or {}  # role -> the file's column it was read from
        self.catalog = ""  # "", "stored" or "read" (daemon/catalog.py)
        self.instrument = instrument
        self.kind = kind
        self.describe = describe
        self.stats = stats
        self.bar_seconds = bar_seconds
        self._ticks = ticks
        self._blocks = blocks
        if ticks is not None:
            n = len(ticks)
            span = (n, int(ticks.ts_ns[0]) if n else 0, int(ticks.ts_ns[-1]) if n else 0)
        self._count, self._first, self._last = span
        self._scale = (1, 1)  # price, size multipliers of a regrid
        self._cut: int | None = None  # drop_before's time (streamed feeds drop as they read)
        self._batch_size = batch_size

    @property
    def streamed(self) -> bool:
        return self._ticks is None

    @property
    def expected_ticks(self) -> int:
        return self._count

    @property
    def first_ts(self) -> int:
        return self._first

    @property
    def last_ts(self) -> int:  # rows are in time order once read (out_of_order drop/sort/fail)
        return self._last

    @property
    def ticks(self) -> TickBatch:
        """Every tick at once (tests, small files): a streamed feed is read whole for it."""
        if self._ticks is not None:
            return self._ticks
        parts = list(self._read())
        if not parts:
            return TickBatch.from_trades(self.instrument.id, *(np.zeros(0, np.int64),) * 3)
        t0 = parts[0]
        return msgspec.structs.replace(t0, **{f: np.concatenate([getattr(b, f) for b in parts])
                                              for f in ("ts_ns", "price", "size", "side", "bid",
                                                        "ask")})

    def regrid(self, tick: Decimal, lot: Decimal) -> None:
        """Move to a finer common grid of several files (each of `tick`, `lot` divides this
        feed's own): prices and sizes are multiplied by whole numbers, exactly."""
        inst = self.instrument
        kt, kl = inst.tick_size / tick, inst.lot_size / lot
        if kt == 1 and kl == 1:
            return
        if kt != kt.to_integral_value() or kl != kl.to_integral_value():
            raise FeedError(f"{Path(self.path).name}: tick {inst.tick_size} / lot {inst.lot_size} "
                            f"is not a multiple of the common grid {tick} / {lot}")
        a, b = int(kt), int(kl)
        if self._ticks is not None:
            self._ticks = _scaled(self._ticks, a, b)
        else:
            self._scale = (self._scale[0] * a, self._scale[1] * b)
        self.describe = self.describe.replace(
            f"tick size {inst.tick_size}, lot size {inst.lot_size}",
            f"tick size {tick}, lot size {lot} (the grid common to the instrument's files; "
            f"this file's own: {inst.tick_size}, {inst.lot_size})")
        self.instrument = msgspec.structs.replace(inst, tick_size=tick, lot_size=lot)

    def drop_before(self, t_ns: int) -> int:
        """Drop the ticks older than `t_ns` (an earlier file's last tick; for bars also at it),
        counted as out of order; returns how many."""
        side = "right" if self.bar_seconds else "left"
        if self._ticks is not None:
            cut = int(np.searchsorted(self._ticks.ts_ns, t_ns, side=side))
            self._ticks = self._ticks.slice(cut, len(self._ticks))
        else:  # the rows are in time order: count the leading ones, reading only that far
            cut = 0
            for batch in self._read():
                k = int(np.searchsorted(batch.ts_ns, t_ns, side=side))
                cut += k
                if k < len(batch):
                    break
            self._cut = t_ns
        if cut:
            self._count -= cut
            if self._count == 0:
                self._first = self._last = 0
            self.stats.out_of_order += cut
            self.stats.ticks = self._count
            self.describe += (f"; {plural(cut, 'tick')} older than the previous file's last tick "
                              "dropped")
        return cut

    def _read(self) -> Iterator[TickBatch]:
        if self._ticks is not None:
            yield self._ticks
            return
        assert self._blocks is not None
        a, b = self._scale
        side = "right" if self.bar_seconds else "left"
        cut = self._cut
        for block in self._blocks():
            if cut is not None:
                k = int(np.searchsorted(block.ts_ns, cut, side=side))
                if k >= len(block):
                    continue
                block, cut = block.slice(k, len(block)), None
            yield _scaled(block, a, b) if (a, b) != (1, 1) else block

    def batches(self) -> Iterator[TickBatch]:
        step = self._batch_size
        for block in self._read():
            n = len(block)
            for start in range(0, n, step):
                yield block if n <= step else block.slice(start, min(start + step, n))


def _scaled(t: TickBatch, a: int, b: int) -> TickBatch:
    if t.bid is not t.price:
        return msgspec.structs.replace(t, price=t.price * a, size=t.size * b, bid=t.bid * a,
                                       ask=t.ask * a)
    return TickBatch.from_trades(t.instrument_id, t.ts_ns, t.price * a, t.size * b, t.side)


def bars_to_ticks(ts_open: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                  volume: np.ndarray | None, period_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four ticks per bar -> (ts_ns, price ticks, size lots), see the module docstring."""
    n = len(o)
    up = c >= o
    ts = np.empty(4 * n, dtype=np.int64)
    px = np.empty(4 * n, dtype=np.int64)
    sz = np.zeros(4 * n, dtype=np.int64)
    for k, (offset, price) in enumerate(((0, o), (period_ns // 4, np.where(up, lo, h)),
                                         (period_ns // 2, np.where(up, h, lo)),
                                         (3 * period_ns // 4, c))):
        ts[k::4] = ts_open + offset
        px[k::4] = price
    if volume is not None:
        q = volume // 4
        sz[0::4] = sz[1::4] = sz[2::4] = q
        sz[3::4] = volume - 3 * q
    np.maximum.accumulate(ts, out=ts)  # bars closer together than D must not run time backwards
    return ts, px, sz


def nothing_usable(name: str, raw: RawTable, stats: FeedStats) -> str:
    if stats.rows == 0:
        return (f"{name}: no data rows" + (" (a header only)" if raw.header else "") +
                "; nothing to replay")
    first = "; ".join(f"line {line}: {reason}" for line, reason in stats.malformed_rows[:5])
    return (f"{name}: all {plural(stats.rows, 'data row')} are malformed, nothing to replay; "
            f"first bad lines: {first}")


def _period_text(seconds: float) -> str:
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= unit and seconds % unit == 0:
            return f"{int(seconds // unit)}-{name}"
    return f"{seconds:g}-second"


def describe_text(raw: RawTable, cfg: FeedConfig, stats: FeedStats, n_ticks: int, tick: Decimal,
                  lot: Decimal, bar_seconds: float | None) -> str:
    name = Path(raw.path).name
    if raw.kind == "trades":
        side_text = (f"aggressor side from '{raw.roles['side']}'" if "side" in raw.data
                     else "aggressor side unknown (0)")
        text = (f"trade ticks from {name}: {plural(stats.rows, 'row')}, {plural(n_ticks, 'tick')}; "
                f"{side_text}")
    elif raw.kind == "quotes":
        nq = sum(r in raw.data for r in ("bid_size", "ask_size"))
        text = (f"top-of-book quote ticks (bid/ask) from {name}: {plural(stats.rows, 'row')}, "
                f"{plural(n_ticks, 'tick')}; price = mid rounded down to the tick, size "
                + ("min(bid size, ask size)" if nq == 2 else "from the file"
                   if nq or "size" in raw.data else "0 (not in the file)"))
    else:
        assert bar_seconds is not None
        vol = "volume" in raw.data
        text = (f"{_period_text(bar_seconds)} {'OHLCV' if vol else 'OHLC'} bars from {name} "
                f"(stamped by {cfg.bar_ts} time): {plural(stats.rows, 'row')}, replayed as 4 ticks "
                f"per bar (open, low/high by direction, close) = {plural(n_ticks, 'tick')}; "
                + ("volume split in equal lots, remainder on the close" if vol
                   else "no volume: size 0 per tick"))
    if raw.guessed:
        text += ("; column names not known, columns chosen by their values: "
                 + ", ".join(f"{r}={c!r}" for r, c in raw.roles.items())
                 + " (name them with feed.columns)")
    text += f"; tick size {tick}, lot size {lot}"
    if stats.off_tick:
        text += f"; {plural(stats.off_tick, 'price')} finer than the tick size {tick} refused"
    if stats.off_lot:
        text += f"; {plural(stats.off_lot, 'size')} rounded to the lot size {lot}"
    if stats.side_unknown:
        shown = ", ".join(repr(c) for c in stats.side_codes_unknown)
        text += (f"; {plural(stats.side_unknown, 'tick')} with an unknown side code ({shown}) "
                 "replayed as side 0 (map codes with feed.side_codes)")
    if stats.malformed:
        text += f"; {plural(stats.malformed, 'malformed row')} skipped"
    if stats.out_of_order:
        verb = "reordered" if cfg.out_of_order == "sort" else "dropped"
        text += f"; {plural(stats.out_of_order, 'out-of-order row')} {verb}"
    return text[0].upper() + text[1:]


def open_file_feed(path: str | Path, cfg: FeedConfig, instrument_id: str,
                   tick_size: Decimal | None = None, lot_size: Decimal | None = None, *,
                   block_bytes: int | None = None, sink: Any = None) -> FileFeed:
    """Open a data file. Trades and quotes are read in blocks of `block_bytes` and never held
    whole (feeds/blocks.py); 0 reads the whole file at once, None (the default) streams files
    over STREAM_ABOVE bytes in blocks of BLOCK_BYTES and reads smaller ones whole (fastest, and
    small). Bars and "sort" of an unsorted file are read whole. `sink` (the catalog writer)
    receives the parsed blocks of a streamed read."""
    p = Path(path)
    if not p.is_file():
        raise FeedError(f"feed file not found: {p}")
    if block_bytes is None:
        block_bytes = BLOCK_BYTES if p.stat().st_size > STREAM_ABOVE else 0
    if block_bytes > 0:
        from himari.daemon.feeds.blocks import open_streaming

        feed = open_streaming(p, cfg, instrument_id, tick_size, lot_size, block_bytes, sink)
        if feed is not None:
            return feed
    return _open_whole(p, cfg, instrument_id, tick_size, lot_size)


def _open_whole(p: Path, cfg: FeedConfig, instrument_id: str, tick_size: Decimal | None,
                lot_size: Decimal | None) -> FileFeed:
    raw = read_table(p, cfg)
    stats = FeedStats()
    b = convert(raw, cfg, tick_size, lot_size, stats)
    ts, ticks, lots, tick, lot, side = b.ts, b.ticks, b.lots, b.tick, b.lot, b.side
    name = p.name
    good = b.good
    if good.size == 0:
        raise FeedError(nothing_usable(name, raw, stats))
    keep, _ = order_rows(raw, ts, good, cfg, raw.kind == "bars", stats)
    n_rows = len(ts)
    whole = keep.size == n_rows and (n_rows < 2 or bool(np.all(keep[1:] > keep[:-1])))

    def pick(a: np.ndarray) -> np.ndarray:  # every row kept in order (the usual case): no copy
        return a if whole else a[keep]

    if side is not None and b.side_unknown is not None:
        unknown_kept = pick(b.side_unknown)
        stats.side_unknown = int(unknown_kept.sum())
        if stats.side_unknown:
            unknown_codes(raw, keep[unknown_kept], stats.side_codes_unknown)
    bar_seconds = None
    if raw.kind != "bars":
        batch = tick_batch(raw.kind, instrument_id, pick(ts), {r: pick(v) for r, v in ticks.items()},
                           {r: pick(v) for r, v in lots.items()},
                           pick(side) if side is not None else None)
    else:
        t = pick(ts)
        if cfg.bar_seconds > 0:
            period = cfg.bar_seconds * 1_000_000_000
        else:  # from every parsed bar time, so skipped bars do not widen the steps
            steps = np.diff(ts[~b.ts_bad])
            steps = steps[steps > 0]
            if steps.size == 0:
                raise FeedError(f"{name}: cannot infer the bar period from {keep.size} bar(s); "
                                "set feed.bar_seconds")
            period = int(np.median(steps))
        bar_seconds = period / 1e9
        t_open = t - period if cfg.bar_ts == "close" else t
        vol = pick(lots["volume"]) if "volume" in lots else None
        bts, bpx, bsz = bars_to_ticks(t_open, *(pick(ticks[r]) for r in b.price_roles), vol, period)
        batch = TickBatch.from_trades(instrument_id, bts, bpx, bsz)
    stats.ticks = len(batch)
    text = describe_text(raw, cfg, stats, len(batch), tick, lot, bar_seconds)
    instrument = Instrument(id=instrument_id, tick_size=tick, lot_size=lot, currency=cfg.currency)
    return FileFeed(path=str(p), instrument=instrument, kind=raw.kind, describe=text,
                    ticks=batch, stats=stats, batch_size=cfg.batch_size, bar_seconds=bar_seconds,
                    roles=dict(raw.roles))
