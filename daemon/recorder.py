"""Decision records on the slow path.

Decisions, intents, risk verdicts, order events and fills are offered to a bounded queue (drop
oldest, counted) and written as JSON lines by one owned task, so the hot path never waits on disk.
Every record carries the ids that tie a bar to its decision, order and fill. (The order manager's
write-ahead journal is separate and synchronous.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import msgspec
import structlog

from himari.daemon.bus import Bus, SlowQueue
from himari.daemon.events import (Decision, ExecutionDiscrepancy, Fill, OrderAccepted,
                                  OrderCancelled, OrderExpired, OrderFilled, OrderIntent,
                                  OrderPartiallyFilled, OrderRejected, OrderSubmitted,
                                  RiskVerdict, SynergyDetected)
from himari.daemon.jsonl import typed_line

log = structlog.get_logger("himari.records")

# The ids that tie a bar to its decision, order and fill, logged with each record (debug level).
_ID_FIELDS = ("event_id", "ts_ns", "source_id", "decision_id", "intent_id", "order_id",
              "client_order_id", "fill_id", "rule", "approved", "side", "quantity", "price",
              "target_position", "synergy_type", "direction")

RECORDED = (Decision, OrderIntent, RiskVerdict, OrderSubmitted, OrderAccepted, OrderPartiallyFilled,
            OrderFilled, OrderCancelled, OrderRejected, OrderExpired, Fill, SynergyDetected,
            ExecutionDiscrepancy)


_DECISION_ENCODER = msgspec.json.Encoder()
_EMPTY_TAIL = b',"details":{}}\n'


def decision_line(ev: Decision) -> bytes:
    """A Decision's record: its fields as before, then its `details` keys at the top level (the
    ensemble's `agents` list, `disagreement`, `scale`, ...); no `details` key when it is empty."""
    if not ev.details:
        line = typed_line(ev)  # details is the last field: drop its empty tail
        return line[:-len(_EMPTY_TAIL)] + b"}\n" if line.endswith(_EMPTY_TAIL) else line
    record = msgspec.structs.asdict(ev)
    details = record.pop("details")
    for key, value in details.items():
        record.setdefault(key, value)  # a detail never overwrites a Decision field
    return b'{"type":"Decision",' + _DECISION_ENCODER.encode(record)[1:] + b"\n"


class DecisionRecorder:
    def __init__(self, bus: Bus, path: Path, maxsize: int = 100_000) -> None:
        self.path = path
        self.queue = SlowQueue("decision_records", maxsize, "drop_oldest")
        for event_type in RECORDED:
            bus.subscribe_queue(event_type, name="decision_records", queue=self.queue)
        self.written = 0
        self.errors = 0
        # Written under a temporary name and renamed at `close`, like every report file: a
        # crashed session leaves no half decision log beside an earlier report.
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._fh = self._tmp.open("wb")

    async def run(self) -> None:
        """Owned by the session; runs until `close` cancels it."""
        while True:
            self._write(await self.queue.get())
            while self.queue.qsize():  # drain what is queued without yielding per record
                self._write(self.queue.get_nowait())

    def _write(self, ev: msgspec.Struct) -> None:
        """Write one record; a failure is logged and counted, never raised into the session."""
        try:
            self._fh.write(decision_line(ev) if type(ev) is Decision else typed_line(ev))
            self.written += 1
            log.debug(type(ev).__name__,
                      **{k: getattr(ev, k) for k in _ID_FIELDS if hasattr(ev, k)})
        except Exception:  # noqa: BLE001 - the slow path must not take the hot path down
            self.errors += 1
            log.exception("record_failed", event_id=getattr(ev, "event_id", None))

    async def close(self, task: asyncio.Task[None]) -> None:
        """Stop the task, write what is still queued, close the file."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while self.queue.qsize():
            self._write(self.queue.get_nowait())
        self._fh.close()
        os.replace(self._tmp, self.path)
