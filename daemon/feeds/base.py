"""What every market-data feed shares: the error type, the statistics record and the Feed protocol.

A feed turns one source (a data file or the synthetic generator) into `TickBatch`es for one
`Instrument`. It counts what it read (`rows`), what it emits (`ticks`), rows it skipped as
malformed (with the first `MAX_MALFORMED_KEPT` line numbers and reasons), rows dropped for arriving
out of time order, and blank lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from himari.daemon.events import TickBatch
from himari.daemon.instruments import Instrument

MAX_MALFORMED_KEPT = 100


class FeedError(ValueError):
    """A feed cannot be opened or read at all (missing file, unknown column, undecidable format)."""


@dataclass
class FeedStats:
    rows: int = 0  # data rows read (header and blank lines excluded)
    ticks: int = 0  # ticks the feed emits
    malformed: int = 0  # rows skipped as malformed
    malformed_rows: list[tuple[int, str]] = field(default_factory=list)  # first 100: (line, reason)
    out_of_order: int = 0  # rows dropped (or reordered, with out_of_order = "sort") for time order
    blank: int = 0  # empty lines skipped silently
    off_tick: int = 0  # rows refused (counted in malformed too) for a price finer than the tick
    off_lot: int = 0  # rows whose size was rounded to the lot size
    side_unknown: int = 0  # ticks replayed with side 0 because their side code is not known
    side_codes_unknown: list[str] = field(default_factory=list)  # the first 10 such codes

    def add_malformed(self, lines: np.ndarray, reasons: list[str], count: int) -> None:
        """Record `count` malformed rows; `lines`/`reasons` hold the first of them in line order."""
        self.malformed += count
        room = MAX_MALFORMED_KEPT - len(self.malformed_rows)
        for line, reason in zip(lines[:room].tolist(), reasons[:room]):
            self.malformed_rows.append((int(line), reason))


class Feed(Protocol):
    @property
    def instrument(self) -> Instrument: ...

    @property
    def kind(self) -> str: ...  # "trades" | "quotes" | "bars"

    @property
    def describe(self) -> str: ...

    @property
    def stats(self) -> FeedStats: ...

    def batches(self) -> Iterator[TickBatch]: ...


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")
