"""Where a replay's ticks come from: the built-in synthetic stream or data files.

Several files are replayed one after another as one instrument (e.g. one file per day). The
instrument's tick and lot size come from config, or are inferred from the first file ("auto"), and
its id, multiplier and currency from config. The source reports what each input is and how it was
replayed, honestly: bars replayed as ticks are labelled as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from decimal import Decimal
from typing import Any

import msgspec

from himari.daemon.config import HimariConfig
from himari.daemon.events import TickBatch
from himari.daemon.instruments import Instrument


class ReplaySource:
    def __init__(self, cfg: HimariConfig, feeds: list[Any], labels: list[str],
                 instrument_id: str) -> None:
        self._feeds = feeds
        self._labels = labels
        first = feeds[0].instrument
        icfg = cfg.instrument
        self.instrument = Instrument(id=instrument_id, tick_size=first.tick_size,
                                     lot_size=first.lot_size, multiplier=icfg.multiplier,
                                     currency=icfg.currency)

    def warmup(self) -> None:
        """Compile the feeds' kernels (the synthetic generator has one)."""
        for feed in self._feeds:
            fn = getattr(feed, "warmup", None)
            if fn is not None:
                fn()

    def batches(self) -> Iterator[TickBatch]:
        inst_id = self.instrument.id
        for feed in self._feeds:
            for batch in feed.batches():
                if batch.instrument_id != inst_id:
                    batch = msgspec.structs.replace(batch, instrument_id=inst_id)
                yield batch

    def expected_ticks(self) -> int | None:
        total = 0
        for feed in self._feeds:
            n = getattr(feed, "expected_ticks", None)
            if n is None:
                return None
            total += int(n() if callable(n) else n)
        return total

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for label, feed in zip(self._labels, self._feeds):
            stats = feed.stats
            out.append({"input": label, "kind": str(getattr(feed, "kind", "")),
                        "description": feed.describe, **_stats_dict(stats)})
        return out

    def malformed(self) -> int:
        return sum(int(_stats_dict(f.stats).get("malformed", 0)) for f in self._feeds)


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


def open_source(cfg: HimariConfig, paths: list[str]) -> ReplaySource:
    if not paths and cfg.feed.kind == "file":
        paths = list(cfg.feed.paths)
    if not paths:
        from himari.daemon.feeds.synthetic import SyntheticFeed

        feed = SyntheticFeed(cfg.feed)
        return ReplaySource(cfg, [feed], ["synthetic"], cfg.instrument.id or "SYN")

    from himari.daemon.feeds.files import open_file_feed

    icfg = cfg.instrument
    instrument_id = icfg.id or _id_from_path(paths[0])
    tick = None if icfg.tick_size == "auto" else Decimal(icfg.tick_size)
    lot = None if icfg.lot_size == "auto" else Decimal(icfg.lot_size)
    feeds = []
    for path in paths:
        feed = open_file_feed(path, cfg.feed, instrument_id, tick, lot)
        if tick is None:  # later files use the first file's grid
            tick = feed.instrument.tick_size
        if lot is None:
            lot = feed.instrument.lot_size
        feeds.append(feed)
    return ReplaySource(cfg, feeds, list(paths), instrument_id)


def _id_from_path(path: str) -> str:
    """An instrument id from a file name: its stem, limited to the characters ids allow."""
    stem = re.sub(r"[^A-Za-z0-9._\-]", "_", Path(path).stem)[:64]
    return stem or "DATA"
