"""Progress of a long replay: a tqdm bar on a terminal, plain structlog lines in logs.

- stderr is a terminal: a tqdm bar (ticks, rate, ETA) on stderr.
- otherwise: one `replay_progress` log event at each 10% of the known total, or every
  `every_s` seconds of wall time when the total is unknown (or a decile takes longer).
- `replay.progress = false`, or a replay shorter than `min_ticks` with a known length: nothing.

The hot path pays one integer comparison per batch (`update`): the bar, the clock and the logger
are touched only when the tick count crosses the next checkpoint (1/200 of the total, or every
`check_ticks` when the total is unknown). Wall time here is for the human only: no result reads it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

import structlog

log = structlog.get_logger("himari.replay")

LONG_REPLAY_TICKS = 2_000_000  # a shorter replay of known length ends in well under a second


class Progress:
    def __init__(self, enabled: bool, total: int | None, *, stream: IO[str] | None = None,
                 tty: bool | None = None, min_ticks: int = LONG_REPLAY_TICKS,
                 every_s: float = 10.0, check_ticks: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total if total and total > 0 else None
        self.enabled = enabled and (self.total is None or self.total >= min_ticks)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty if tty is not None else _isatty(self.stream))
        self.every_s = every_s
        self._clock = clock
        self._step = max(1, self.total // 200) if self.total else max(1, check_ticks)
        self._next = self._step if self.enabled else sys.maxsize  # the hot path's one check
        self._bar: Any = None
        self._shown = 0
        self._t0 = clock()
        self._last_log = self._t0
        self._last_decile = 0
        self.lines = 0  # log lines emitted (tests read it)
        if self.enabled and self.tty:
            from tqdm import tqdm  # only on a terminal, only for a long replay

            self._bar = tqdm(total=self.total, unit="tick", unit_scale=True, file=self.stream,
                             desc="replay", mininterval=0.25, dynamic_ncols=True, leave=True)

    def update(self, ticks: int) -> None:
        """Called after each batch with the running tick count."""
        if ticks < self._next:
            return
        self._next = (ticks // self._step + 1) * self._step
        self._advance(ticks)

    def _advance(self, ticks: int) -> None:
        if self._bar is not None:
            self._bar.update(ticks - self._shown)
            self._shown = ticks
            return
        now = self._clock()
        decile = 10 * ticks // self.total if self.total else 0
        if decile > self._last_decile or now - self._last_log >= self.every_s:
            self._last_decile = max(decile, self._last_decile)
            self._log(ticks, now)

    def _log(self, ticks: int, now: float) -> None:
        self._last_log = now
        elapsed = now - self._t0
        rate = ticks / elapsed if elapsed > 0 else 0.0
        fields: dict[str, Any] = {"ticks": ticks, "elapsed_s": round(elapsed, 1),
                                  "ticks_per_s": round(rate)}
        if self.total:
            fields["total"] = self.total
            fields["pct"] = round(100.0 * ticks / self.total, 1)
            if rate > 0:
                fields["eta_s"] = round(max(self.total - ticks, 0) / rate, 1)
        self.lines += 1
        log.info("replay_progress", **fields)

    def close(self, ticks: int) -> None:
        """At the end of the data (or an early stop): the bar completes, or one last line."""
        if not self.enabled:
            return
        self._next = sys.maxsize
        if self._bar is not None:
            self._bar.update(ticks - self._shown)
            self._shown = ticks
            self._bar.close()
            self._bar = None
        elif self._last_decile < 10:
            self._log(ticks, self._clock())


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
