"""Replay a recorded data file (trades, quotes or bars; CSV or Parquet) as `TickBatch`es.

`open_file_feed` reads the whole file (tables.py), converts every column with vectorized numpy,
validates, and keeps one big TickBatch that `batches()` slices (views, no copies).

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

from collections.abc import Iterator
from decimal import Decimal

import msgspec
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from himari.daemon.events import TickBatch
from himari.daemon.feeds.base import MAX_MALFORMED_KEPT, FeedError, FeedStats, plural
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.tables import RawTable, norm, read_table

__all__ = ["FeedError", "FileFeed", "bars_to_ticks", "open_file_feed"]
from himari.daemon.feeds.timeparse import parse_timestamps
from himari.daemon.feeds.values import infer_step, infer_tick, to_float, to_grid, to_side
from himari.daemon.instruments import Instrument


class FileFeed:
    def __init__(self, *, path: str, instrument: Instrument, kind: str, describe: str,
                 ticks: TickBatch, stats: FeedStats, batch_size: int, bar_seconds: float | None,
                 roles: dict[str, str] | None = None) -> None:
        self.path = path
        self.roles = roles or {}  # role -> the file's column it was read from
        self.catalog = ""  # "", "stored" or "read" (daemon/catalog.py)
        self.instrument = instrument
        self.kind = kind
        self.describe = describe
        self.stats = stats
        self.bar_seconds = bar_seconds
        self._ticks = ticks
        self._batch_size = batch_size

    @property
    def expected_ticks(self) -> int:
        return len(self._ticks)

    @property
    def first_ts(self) -> int:
        return int(self._ticks.ts_ns[0]) if len(self._ticks) else 0

    @property
    def last_ts(self) -> int:  # rows are in time order once read (out_of_order drop/sort/fail)
        return int(self._ticks.ts_ns[-1]) if len(self._ticks) else 0

    @property
    def ticks(self) -> TickBatch:
        return self._ticks

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
        t, a, b = self._ticks, int(kt), int(kl)
        self._ticks = msgspec.structs.replace(
            t, price=t.price * a, size=t.size * b, bid=t.bid * a,
            ask=t.ask * a) if t.bid is not t.price else TickBatch.from_trades(
            t.instrument_id, t.ts_ns, t.price * a, t.size * b, t.side)
        self.describe = self.describe.replace(
            f"tick size {inst.tick_size}, lot size {inst.lot_size}",
            f"tick size {tick}, lot size {lot} (the grid common to the instrument's files; "
            f"this file's own: {inst.tick_size}, {inst.lot_size})")
        self.instrument = msgspec.structs.replace(inst, tick_size=tick, lot_size=lot)

    def drop_before(self, t_ns: int) -> int:
        """Drop the ticks older than `t_ns` (an earlier file's last tick; for bars also at it),
        counted as out of order; returns how many."""
        ts = self._ticks.ts_ns
        cut = int(np.searchsorted(ts, t_ns, side="right" if self.bar_seconds else "left"))
        if cut:
            self._ticks = self._ticks.slice(cut, len(self._ticks))
            self.stats.out_of_order += cut
            self.stats.ticks = len(self._ticks)
            self.describe += (f"; {plural(cut, 'tick')} older than the previous file's last tick "
                              "dropped")
        return cut

    def batches(self) -> Iterator[TickBatch]:
        n, step = len(self._ticks), self._batch_size
        for start in range(0, n, step):
            yield self._ticks.slice(start, min(start + step, n))


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
        stats.off_tick = int(off_rows.sum())
    else:
        stats.off_lot = int(off_rows.sum())
    return out, step


def _order(raw: RawTable, ts: np.ndarray, idx: np.ndarray, cfg: FeedConfig, strict: bool,
           stats: FeedStats) -> np.ndarray:
    """Apply the out-of-order policy to the good rows `idx`; returns the rows to keep, in order."""
    if idx.size < 2:
        return idx
    t = ts[idx]
    prev_max = np.maximum.accumulate(t)[:-1]
    late = np.concatenate(([False], t[1:] <= prev_max if strict else t[1:] < prev_max))
    n_late = int(late.sum())
    if n_late == 0:
        return idx
    if cfg.out_of_order == "fail":
        k = int(np.flatnonzero(late)[0])
        line = int(raw.lines[idx[k]])
        raise FeedError(f"{Path(raw.path).name}: line {line} (ts {np.datetime64(int(t[k]), 'ns')}) is "
                        f"{'not after' if strict else 'older than'} an earlier row "
                        "(feed.out_of_order = 'fail'; use 'drop' or 'sort')")
    stats.out_of_order = n_late
    if cfg.out_of_order == "drop":
        return idx[~late]
    idx = idx[np.argsort(t, kind="stable")]
    if strict:  # sorted bars: a repeated bar time is still dropped
        t = ts[idx]
        idx = idx[np.concatenate(([True], t[1:] > t[:-1]))]
    return idx


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


def _nothing_usable(name: str, raw: RawTable, stats: FeedStats) -> str:
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


def open_file_feed(path: str | Path, cfg: FeedConfig, instrument_id: str,
                   tick_size: Decimal | None = None, lot_size: Decimal | None = None) -> FileFeed:
    p = Path(path)
    if not p.is_file():
        raise FeedError(f"feed file not found: {p}")
    raw = read_table(p, cfg)
    stats = FeedStats(rows=len(raw.lines) + raw.bad_count, blank=raw.blank)
    probs = _Problems(raw)
    try:
        ts, ts_bad = parse_timestamps(raw.data["ts"], cfg.ts_unit, cfg.ts_format, cfg.timezone)
    except ValueError as exc:
        raise FeedError(f"{p.name}: {exc}") from exc
    ts_missing = raw.data["ts"].is_null().to_numpy(zero_copy_only=False)
    probs.add(ts_missing, "missing timestamp")
    probs.add(ts_bad & ~ts_missing, "unparseable timestamp {v}", "ts")

    price_roles = {"trades": ("price",), "quotes": ("bid", "ask"),
                   "bars": ("open", "high", "low", "close")}[raw.kind]
    size_roles = [r for r in ("size", "volume", "bid_size", "ask_size") if r in raw.data]
    prices = {r: _number_checks(probs, r, price=True) for r in price_roles}
    sizes = {r: _number_checks(probs, r, price=False) for r in size_roles}
    side = None
    if "side" in raw.data:
        col = raw.roles["side"]
        maker = (cfg.side_semantics == "buyer_maker" or
                 (cfg.side_semantics == "auto" and "maker" in norm(col)))
        side, side_unknown = to_side(raw.data["side"], maker, cfg.side_codes)
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

    name = p.name
    good = np.flatnonzero(~probs.bad)
    if good.size == 0:
        raise FeedError(_nothing_usable(name, raw, stats))
    keep = _order(raw, ts, good, cfg, raw.kind == "bars", stats)
    n_rows = len(ts)
    whole = keep.size == n_rows and (n_rows < 2 or bool(np.all(keep[1:] > keep[:-1])))

    def pick(a: np.ndarray) -> np.ndarray:  # every row kept in order (the usual case): no copy
        return a if whole else a[keep]

    if side is not None:
        unknown_kept = pick(side_unknown)
        stats.side_unknown = int(unknown_kept.sum())
        if stats.side_unknown:
            codes = pa.array(raw.data["side"]).take(pa.array(keep[unknown_kept]))
            if pa.types.is_dictionary(codes.type):
                codes = codes.dictionary_decode()
            stats.side_codes_unknown = [str(c) for c in pc.unique(codes.slice(0, 100_000))
                                        .to_pylist()[:10]]
    bar_seconds = None
    if raw.kind == "trades":
        size = pick(lots["size"]) if "size" in lots else None
        batch = TickBatch.from_trades(instrument_id, pick(ts), pick(ticks["price"]),
                                      size if size is not None else np.zeros(keep.size, np.int64),
                                      pick(side) if side is not None else None)
        side_text = (f"aggressor side from '{raw.roles['side']}'" if side is not None
                     else "aggressor side unknown (0)")
        text = (f"trade ticks from {name}: {plural(stats.rows, 'row')}, {plural(len(batch), 'tick')}; "
                f"{side_text}")
    elif raw.kind == "quotes":
        qs = [pick(lots[r]) for r in ("bid_size", "ask_size") if r in lots]
        size = (np.minimum(*qs) if len(qs) == 2 else qs[0] if qs
                else pick(lots["size"]) if "size" in lots else None)
        batch = TickBatch.from_quotes(instrument_id, pick(ts), pick(ticks["bid"]), pick(ticks["ask"]), size)
        text = (f"top-of-book quote ticks (bid/ask) from {name}: {plural(stats.rows, 'row')}, "
                f"{plural(len(batch), 'tick')}; price = mid rounded down to the tick, size "
                + ("min(bid size, ask size)" if len(qs) == 2 else "from the file" if size is not None
                   else "0 (not in the file)"))
    else:
        t = pick(ts)
        if cfg.bar_seconds > 0:
            period = cfg.bar_seconds * 1_000_000_000
        else:  # from every parsed bar time, so skipped bars do not widen the steps
            steps = np.diff(ts[~ts_bad])
            steps = steps[steps > 0]
            if steps.size == 0:
                raise FeedError(f"{name}: cannot infer the bar period from {keep.size} bar(s); "
                                "set feed.bar_seconds")
            period = int(np.median(steps))
        bar_seconds = period / 1e9
        t_open = t - period if cfg.bar_ts == "close" else t
        vol = pick(lots["volume"]) if "volume" in lots else None
        bts, bpx, bsz = bars_to_ticks(t_open, *(pick(ticks[r]) for r in price_roles), vol, period)
        batch = TickBatch.from_trades(instrument_id, bts, bpx, bsz)
        fields = "OHLCV" if vol is not None else "OHLC"
        text = (f"{_period_text(bar_seconds)} {fields} bars from {name} (stamped by {cfg.bar_ts} time): "
                f"{plural(stats.rows, 'row')}, replayed as 4 ticks per bar (open, low/high by direction, "
                f"close) = {plural(len(batch), 'tick')}; "
                + ("volume split in equal lots, remainder on the close" if vol is not None
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
    stats.ticks = len(batch)
    instrument = Instrument(id=instrument_id, tick_size=tick, lot_size=lot, currency=cfg.currency)
    return FileFeed(path=str(p), instrument=instrument, kind=raw.kind, describe=text[0].upper() + text[1:],
                    ticks=batch, stats=stats, batch_size=cfg.batch_size, bar_seconds=bar_seconds,
                    roles=dict(raw.roles))

