"""Where a replay's ticks come from: the built-in synthetic stream or data files, per instrument.

Inputs name their instrument with `ID=path`; a plain path belongs to the instrument of the plain
path before it (the first one's id comes from `instrument.id`, else from the file name). So
`himari replay day1.csv day2.csv` replays two files one after another as one instrument, and
`himari replay BTC=btc.csv ETH=eth.csv` replays two instruments, merged in time order (ties go to
the instrument named first, so a replay is deterministic). Each instrument's tick and lot size come
from config or are inferred from its first file ("auto"); its currency is the config's, or with
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
        inst_id = inp.instrument.id
        for feed in inp.feeds:
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


def open_source(cfg: HimariConfig, paths: list[str]) -> ReplaySource:
    if not paths and cfg.feed.kind == "file":
        paths = list(cfg.feed.paths)
    icfg = cfg.instrument
    if not paths:
        from himari.daemon.feeds.synthetic import SyntheticFeed

        feed = SyntheticFeed(cfg.feed)
        inst_id = icfg.id or "SYN"
        return ReplaySource([InstrumentInput(_instrument(cfg, inst_id, feed.instrument), [feed],
                                             ["synthetic"])])

    from himari.daemon.feeds.files import open_file_feed

    inputs = []
    for inst_id, group in split_inputs(paths, icfg.id):
        for path in group:
            if not Path(path).is_file():
                raise ConfigError("DATA", path, "an existing CSV or Parquet file")
        tick = None if icfg.tick_size == "auto" else Decimal(icfg.tick_size)
        lot = None if icfg.lot_size == "auto" else Decimal(icfg.lot_size)
        feeds = []
        for path in group:
            feed = open_file_feed(path, cfg.feed, inst_id, tick, lot)
            if tick is None:  # later files use the first file's grid
                tick = feed.instrument.tick_size
            if lot is None:
                lot = feed.instrument.lot_size
            feeds.append(feed)
        inputs.append(InstrumentInput(_instrument(cfg, inst_id, feeds[0].instrument), feeds,
                                      list(group)))
    return ReplaySource(inputs)


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
