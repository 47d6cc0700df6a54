"""The sandbox's market data: per symbol, ticks in time order, handed out as market time passes.

Two sources, one interface (`take(until_ns)` yields `Ticks` runs of one symbol each; `next_ts()`):
- `SyntheticMarket`: the project's synthetic generator, seed + i for symbol i, starting at the
  sandbox clock's start (so market time and order times agree), endless.
- `ReplayMarket`: data files through `himari.daemon.sources.open_source` (`ID=path` names the
  symbol), merged in time order and shifted so the first tick falls on the clock's start. When
  the data ends the market goes quiet (orders stay working; nothing more fills).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from himari.brokers.sandbox.config import SandboxConfig
from himari.daemon.configbase import ConfigError
from himari.daemon.events import TickBatch, TickKind
from himari.daemon.feeds.config import FeedConfig, SyntheticConfig
from himari.daemon.feeds.synthetic import SynthTicks, SyntheticFeed
from himari.daemon.instruments import Instrument

CHUNK = 2048  # ticks generated at a time per symbol
QUIET_NS = 1 << 62  # next_ts() once the data has ended


class Ticks(NamedTuple):
    """A run of one symbol's ticks: trades (bid/ask = the quotes around them, when known) or
    quotes (price = the mid, no trades)."""

    symbol: str
    quotes: bool
    ts_ns: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray
    bid: np.ndarray
    ask: np.ndarray

    def batch(self) -> TickBatch:
        """What the matching engine sees: trades match at their price, quotes at bid/ask."""
        if self.quotes:
            return TickBatch.from_quotes(self.symbol, self.ts_ns, self.bid, self.ask, self.size)
        return TickBatch.from_trades(self.symbol, self.ts_ns, self.price, self.size, self.side)


class _SynthTape:
    def __init__(self, feed: SyntheticFeed) -> None:
        self._chunks: Iterator[SynthTicks] = feed.chunks(quotes=True, size=CHUNK)
        self.ticks = next(self._chunks)
        self.idx = 0

    def next_ts(self) -> int:
        return int(self.ticks.ts_ns[self.idx])

    def take(self, until_ns: int) -> SynthTicks | None:
        """The ticks with ts <= until_ns not yet taken (at most the rest of the current chunk)."""
        t = self.ticks
        j = int(np.searchsorted(t.ts_ns, until_ns, side="right"))
        if j <= self.idx:
            return None
        i, self.idx = self.idx, j
        out = SynthTicks(*(a[i:j] for a in t))
        if self.idx >= len(t.ts_ns):
            self.ticks, self.idx = next(self._chunks), 0
        return out


class SyntheticMarket:
    def __init__(self, cfg: SandboxConfig, start_ns: int) -> None:
        start = datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc).isoformat()
        self.instruments = {s: Instrument(id=s, tick_size=Decimal(cfg.tick_size),
                                          lot_size=Decimal(cfg.lot_size)) for s in cfg.symbols}
        self.tapes = {}
        for i, s in enumerate(cfg.symbols):
            syn = SyntheticConfig(seed=cfg.seed + i, n_ticks=2_000_000_000, start=start,
                                  start_price=cfg.start_price, tick_size=cfg.tick_size,
                                  lot_size=cfg.lot_size, ticks_per_day=cfg.ticks_per_day)
            self.tapes[s] = _SynthTape(SyntheticFeed(FeedConfig(synthetic=syn), s))

    def next_ts(self) -> int:
        return min(t.next_ts() for t in self.tapes.values())

    def peek_ask(self, symbol: str) -> int:
        tape = self.tapes[symbol]
        return int(tape.ticks.ask[tape.idx])

    def take(self, until_ns: int) -> Iterator[Ticks]:
        for symbol, tape in self.tapes.items():
            while (t := tape.take(until_ns)) is not None:
                yield Ticks(symbol, False, t.ts_ns, t.price, t.size, t.side, t.bid, t.ask)


class ReplayMarket:
    def __init__(self, cfg: SandboxConfig, start_ns: int) -> None:
        from himari.daemon.config import HimariConfig
        from himari.daemon.sources import open_source

        source = open_source(HimariConfig(), list(cfg.replay_paths))
        self.instruments: dict[str, Instrument] = {}
        self._symbol: dict[str, str] = {}
        for inst_id, inst in source.instruments.items():
            symbol = inst_id.upper()
            if symbol in self.instruments:
                raise ConfigError("sandbox.replay_paths", cfg.replay_paths,
                                  f"distinct symbols (two inputs are {symbol})")
            self._symbol[inst_id] = symbol
            self.instruments[symbol] = Instrument(id=symbol, tick_size=inst.tick_size,
                                                  lot_size=inst.lot_size,
                                                  multiplier=inst.multiplier,
                                                  currency=inst.currency)
        self._batches = source.batches()
        self._head: TickBatch | None = next(self._batches, None)
        self._pos = 0
        if self._head is None:
            raise ConfigError("sandbox.replay_paths", cfg.replay_paths, "files with ticks")
        self._shift = start_ns - int(self._head.ts_ns[0])

    def next_ts(self) -> int:
        if self._head is None:
            return QUIET_NS
        return int(self._head.ts_ns[self._pos]) + self._shift

    def peek_ask(self, symbol: str) -> int:
        head = self._head
        if head is not None and self._symbol[head.instrument_id] == symbol:
            return int(head.ask[self._pos])
        return 0  # unknown until the symbol's first tick: no buying-power check on price

    def take(self, until_ns: int) -> Iterator[Ticks]:
        while self._head is not None:
            b, i = self._head, self._pos
            j = int(np.searchsorted(b.ts_ns, until_ns - self._shift, side="right"))
            if j <= i:
                return
            yield Ticks(self._symbol[b.instrument_id], b.kind == TickKind.QUOTES,
                        b.ts_ns[i:j] + self._shift, b.price[i:j], b.size[i:j], b.side[i:j],
                        b.bid[i:j], b.ask[i:j])
            if j >= len(b):
                self._head, self._pos = next(self._batches, None), 0
            else:
                self._pos = j


def open_market(cfg: SandboxConfig, start_ns: int) -> SyntheticMarket | ReplayMarket:
    return ReplayMarket(cfg, start_ns) if cfg.replay_paths else SyntheticMarket(cfg, start_ns)
