"""Where a replay's ticks come from: the built-in synthetic stream or data files, per instrument.

Inputs name their instrument with `ID=path`; a plain path belongs to the instrument of the plain
path before it (the first one's id comes from `instrument.id`, else from the file name). So
`himari replay day1.csv day2.csv` replays two files one after another as one instrument, and
`himari replay BTC=btc.csv ETH=eth.csv` replays two instruments, merged in time order (ties go to
the instrument named first, so a replay is deterministic). One instrument's files are replayed in
time order: under `feed.out_of_order = "fail"` files given out of order, or overlapping in time,
are refused naming both; under "drop" and "sort" they are ordered by their first tick, and where
they still overlap "drop" drops a later file's ticks older than the earlier file's last one
(counted), "sort" merges them tick by tick (ties to the earlier file). Each instrument's tick and lot size come
from config or are inferred ("auto") as the grid common to all its files; its currency is the config's, or with
"auto" the quote currency of an FX pair id (usdjpy-ticks -> JPY), else USD. The source reports
what each input is and how it was replayed, honestly: bars replayed as ticks are labelled as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from himari.daemon.config import HimariConfig
from himari.daemon.configbase import ConfigError
from himari.daemon.events import TickBatch
from himari.daemon.feeds.base import FeedError
from himari.daemon.instruments import Instrument

# ISO codes recognised in FX pair ids for currency = "auto".
_FX_CODES = {"USD", "EUR", "JPY", "GBP", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "HKD",
             "SGD", "CNH", "CNY", "MXN", "ZAR", "TRY", "PLN", "CZK", "HUF"}
_PAIR_RE = re.compile(r"^([A-Za-z]{3})[/_\-.]?([A-Za-z]{3})(?![A-Za-z])")
_ID_RE = re.compile(r"[A-Za-z0-9._\-/]{1,64}")


def infer_currency(instrument_id: str) -> str:
    m = _PAIR_RE.match(instrument_id)
    if m and m.group(1).upper() in _FX_CODES and m.group(2).upper() in _FX_CODES:
        return m.group(2).upper()
    return "USD"


@dataclass
class InstrumentInput:
    """One instrument's feeds (replayed one after another) and their labels."""

    instrument: Instrument
    feeds: list[Any]
    labels: list[str]
    merge: bool = False  # overlapping files under out_of_order = "sort": merged in time order


class ReplaySource:
    def __init__(self, inputs: list[InstrumentInput]) -> None:
        if not inputs:
            raise ValueError("a replay source needs at least one input")
        self.inputs = inputs
        self.instruments = {i.instrument.id: i.instrument for i in inputs}
        self.instrument = inputs[0].instrument  # the first (the only one in most replays)

    def warmup(self) -> None:
        """Compile the feeds' kernels (the synthetic generator has one)."""
        for feed in self._all_feeds():
            fn = getattr(feed, "warmup", None)
            if fn is not None:
                fn()

    def _all_feeds(self) -> Iterator[Any]:
        for inp in self.inputs:
            yield from inp.feeds

    def _instrument_batches(self, inp: InstrumentInput) -> Iterator[TickBatch]:
        if inp.merge:
            yield from merge_in_time_order([self._feed_batches(inp, f) for f in inp.feeds])
            return
        for feed in inp.feeds:
            yield from self._feed_batches(inp, feed)

    @staticmethod
    def _feed_batches(inp: InstrumentInput, feed: Any) -> Iterator[TickBatch]:
        inst_id = inp.instrument.id
        for batch in feed.batches():
            if len(batch) == 0:
                continue
            if batch.instrument_id != inst_id:
                batch = msgspec.structs.replace(batch, instrument_id=inst_id)
            yield batch

    def batches(self) -> Iterator[TickBatch]:
        """Every instrument's ticks in time order, as batches of one instrument each."""
        iters = [self._instrument_batches(inp) for inp in self.inputs]
        if len(iters) == 1:
            yield from iters[0]
            return
        yield from merge_in_time_order(iters)

    def expected_ticks(self) -> int | None:
        total = 0
        for feed in self._all_feeds():
            n = getattr(feed, "expected_ticks", None)
            if n is None:
                return None
            total += int(n() if callable(n) else n)
        return total

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for inp in self.inputs:
            for label, feed in zip(inp.labels, inp.feeds):
                out.append({"input": label, "instrument": inp.instrument.id,
                            "kind": str(getattr(feed, "kind", "")),
                            "description": feed.describe, **_stats_dict(feed.stats)})
                if getattr(feed, "catalog", ""):
                    out[-1]["catalog"] = feed.catalog
        return out

    def malformed(self) -> int:
        return sum(int(_stats_dict(f.stats).get("malformed", 0)) for f in self._all_feeds())


def merge_in_time_order(iters: list[Iterator[TickBatch]]) -> Iterator[TickBatch]:
    """K-way merge of per-instrument batch streams into runs of one instrument each. A tick of
    stream g goes before a tick of stream h at the same time when g < h."""
    heads: list[TickBatch | None] = [next(it, None) for it in iters]
    pos = [0] * len(iters)
    while True:
        live = [g for g, b in enumerate(heads) if b is not None]
        if not live:
            return
        g = min(live, key=lambda i: (int(heads[i].ts_ns[pos[i]]), i))  # type: ignore[union-attr]
        batch = heads[g]
        assert batch is not None
        start = pos[g]
        stop = len(batch)
        for h in live:
            if h == g:
                continue
            other = heads[h]
            assert other is not None
            t_h = other.ts_ns[pos[h]]
            limit = int(np.searchsorted(batch.ts_ns, t_h, side="right" if g < h else "left"))
            stop = min(stop, limit)
        yield batch if (start, stop) == (0, len(batch)) else batch.slice(start, stop)
        if stop >= len(batch):
            heads[g], pos[g] = next(iters[g], None), 0
        else:
            pos[g] = stop


def _stats_dict(stats: Any) -> dict[str, Any]:
    if isinstance(stats, dict):
        d = dict(stats)
    elif isinstance(stats, msgspec.Struct):
        d = msgspec.structs.asdict(stats)
    else:
        d = {k: v for k, v in vars(stats).items() if not k.startswith("_")}
    rows = d.pop("malformed_rows", None)
    if rows:
        d["malformed_examples"] = [list(r) if isinstance(r, tuple) else r for r in rows[:20]]
    return d


def split_inputs(paths: list[str], default_id: str) -> list[tuple[str, list[str]]]:
    """Group `ID=path` / plain-path inputs by instrument, in first-seen order."""
    groups: dict[str, list[str]] = {}
    current = ""
    for text in paths:
        ident, sep, path = text.partition("=")
        if sep and _ID_RE.fullmatch(ident) and not Path(text).exists():
            current = ident
        else:
            path = text
            if not current:
                current = default_id or _id_from_path(path)
        groups.setdefault(current, []).append(path)
    return list(groups.items())


def synthetic_config(cfg: HimariConfig) -> Any:
    """`feed.synthetic` with the instrument's tick and lot size when config gives them."""
    from himari.daemon.feeds.config import SyntheticConfig

    synth, icfg = cfg.feed.synthetic, cfg.instrument
    changes = {k: getattr(icfg, k) for k in ("tick_size", "lot_size") if getattr(icfg, k) != "auto"}
    if not changes:
        return synth
    fields = msgspec.structs.asdict(synth) | changes
    try:
        return SyntheticConfig(**fields)
    except ConfigError as exc:
        if exc.key == "feed.synthetic.start_price":
            raise ConfigError("instrument.tick_size", icfg.tick_size,
                              f"a tick that feed.synthetic.start_price = {synth.start_price} is a "
                              "multiple of (the synthetic stream trades on the instrument's grid)"
                              ) from None
        raise


def data_paths(cfg: HimariConfig, paths: list[str]) -> list[str]:
    """The files a session replays: the command line's, else feed.paths for feed.kind = "file"
    (which must name some: a file feed never falls back to the synthetic stream)."""
    if paths:
        return list(paths)
    if cfg.feed.kind == "file":
        if not cfg.feed.paths:
            raise ConfigError("feed.paths", [], 'at least one CSV or Parquet file when feed.kind = '
                              '"file" (or give the files on the command line)')
        return list(cfg.feed.paths)
    return []


def check_data_paths(paths: list[str], default_id: str, key: str = "DATA") -> None:
    for _, group in split_inputs(paths, default_id):
        for path in group:
            if not Path(path).is_file():
                raise ConfigError(key, path, "an existing CSV or Parquet file")


def open_source(cfg: HimariConfig, paths: list[str]) -> ReplaySource:
    paths = data_paths(cfg, paths)
    icfg = cfg.instrument
    if not paths:
        from himari.daemon.feeds.synthetic import SyntheticFeed

        feed_cfg = msgspec.structs.replace(cfg.feed, synthetic=synthetic_config(cfg))
        feed = SyntheticFeed(feed_cfg)
        inst_id = icfg.id or "SYN"
        return ReplaySource([InstrumentInput(_instrument(cfg, inst_id, feed.instrument), [feed],
                                             ["synthetic"])])

    from himari.daemon.catalog import open_cached
    from himari.daemon.feeds.values import decimal_gcd

    inputs = []
    for inst_id, group in split_inputs(paths, icfg.id):
        for path in group:
            if not Path(path).is_file():
                raise ConfigError("DATA", path, "an existing CSV or Parquet file")
        tick = None if icfg.tick_size == "auto" else Decimal(icfg.tick_size)
        lot = None if icfg.lot_size == "auto" else Decimal(icfg.lot_size)
        feeds = [open_cached(path, cfg.feed, inst_id, tick, lot) for path in group]
        if len(feeds) > 1:  # inferred grids: the one common to every file (exact, no rounding)
            common_tick = decimal_gcd([f.instrument.tick_size for f in feeds])
            common_lot = decimal_gcd([f.instrument.lot_size for f in feeds])
            for f in feeds:
                f.regrid(common_tick, common_lot)
        order, merge = order_files(feeds, list(group), cfg.feed.out_of_order)
        inputs.append(InstrumentInput(_instrument(cfg, inst_id, feeds[0].instrument),
                                      [feeds[k] for k in order], [group[k] for k in order], merge))
    return ReplaySource(inputs)


def order_files(feeds: list[Any], labels: list[str], policy: str) -> tuple[list[int], bool]:
    """Time order of one instrument's files -> (their order, whether to merge them tick by tick);
    see the module docstring. "drop" trims the later files in place."""
    def when(t: int) -> str:
        return str(np.datetime64(t, "ns"))

    if policy == "fail":
        for k in range(1, len(feeds)):
            a, b = feeds[k - 1], feeds[k]
            if b.first_ts < a.last_ts:
                raise FeedError(
                    f"{Path(labels[k]).name} starts at {when(b.first_ts)}, before "
                    f"{Path(labels[k - 1]).name} (given before it) ends at {when(a.last_ts)} "
                    "(feed.out_of_order = 'fail': give the files in time order without overlap, "
                    "or use 'drop' or 'sort')")
        return list(range(len(feeds))), False
    order = sorted(range(len(feeds)), key=lambda k: feeds[k].first_ts)  # stable: ties keep order
    overlap = any(feeds[order[k]].first_ts < max(feeds[j].last_ts for j in order[:k])
                  for k in range(1, len(order)))
    if not overlap:
        return order, False
    if policy == "sort":
        return order, True
    latest = feeds[order[0]].last_ts
    for k in order[1:]:
        if feeds[k].first_ts < latest:
            feeds[k].drop_before(latest)
        if feeds[k].expected_ticks:
            latest = max(latest, feeds[k].last_ts)
    return order, False


class BrokerSource:
    """What the report reads about the inputs when market data comes from a broker's stream:
    the instruments come from config (tick and lot size must be given, a stream cannot be
    inspected before it is trusted)."""

    def __init__(self, cfg: HimariConfig) -> None:
        icfg = cfg.instrument
        symbols = list(cfg.feed.symbols) or ([icfg.id] if icfg.id else [])
        if not symbols:
            raise ConfigError("feed.symbols", [], "the symbols to trade (or instrument.id)")
        for key in ("tick_size", "lot_size"):
            if getattr(icfg, key) == "auto":
                raise ConfigError(f"instrument.{key}", "auto",
                                  "a decimal for a broker feed (nothing to infer it from)")
        tick, lot = Decimal(icfg.tick_size), Decimal(icfg.lot_size)
        self.instruments = {
            s: Instrument(id=s, tick_size=tick, lot_size=lot, multiplier=icfg.multiplier,
                          currency=infer_currency(s) if icfg.currency == "auto" else icfg.currency)
            for s in symbols}
        self.instrument = next(iter(self.instruments.values()))
        self.venue = cfg.venue.name

    def warmup(self) -> None:
        return None

    def expected_ticks(self) -> int | None:
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [{"input": f"{self.venue} market data stream", "instrument": i, "kind": "live",
                 "description": f"live trades and quotes of {i} from {self.venue}"}
                for i in self.instruments]

    def malformed(self) -> int:
        return 0


def _instrument(cfg: HimariConfig, inst_id: str, feed_inst: Instrument) -> Instrument:
    icfg = cfg.instrument
    currency = infer_currency(inst_id) if icfg.currency == "auto" else icfg.currency
    return Instrument(id=inst_id, tick_size=feed_inst.tick_size, lot_size=feed_inst.lot_size,
                      multiplier=icfg.multiplier, currency=currency)


def _id_from_path(path: str) -> str:
    """An instrument id from a file name: its stem, limited to the characters ids allow."""
    stem = re.sub(r"[^A-Za-z0-9._\-]", "_", Path(path).stem)[:64]
    return stem or "DATA"
