"""A minimal durable write-ahead journal: one JSON object per line.

Each record is a msgspec Struct written as a typed JSON line (`daemon/jsonl.py`: the Struct's JSON,
Decimal as an exact string, with a leading `"type"` field naming its class). `write` returns only after the line is flushed to the
OS and, when `fsync=True` (live), forced to disk with `os.fsync`; callers write a record BEFORE they
acknowledge the action it records (publish the event, send the order). Replays pass `fsync=False`:
a crash there loses nothing that cannot be recomputed.

`Journal.read(path)` yields the records back as dicts; `decode(record)` rebuilds the Struct for the
event types of `daemon/events.py` and `OrderRequest`. A final line without its newline is a write
torn by a crash: it is skipped (it was never acknowledged). A bad line anywhere else is corruption
and raises `JournalError`. Never pickle: the journal must stay readable by other tools and versions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson

from .. import events
from ..jsonl import typed_line
from ..venue import OrderRequest


class JournalError(ValueError):
    pass


def _registry() -> dict[str, type]:
    types: dict[str, type] = {"OrderRequest": OrderRequest}
    for name in dir(events):
        obj = getattr(events, name)
        if isinstance(obj, type) and issubclass(obj, events.Event) and obj is not events.Event:
            types[name] = obj
    return types


_TYPES = _registry()


class Journal:
    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)  # unbuffered: each write reaches the OS
        self.records = 0

    def write(self, record: msgspec.Struct) -> None:
        """Append one Struct as a typed record; durable (per `fsync`) when this returns."""
        self._write_line(typed_line(record))

    def write_raw(self, type_name: str, fields: dict[str, Any]) -> None:
        """Append a record that is not a Struct (for example a cancel request)."""
        data = dict(fields)
        data["type"] = type_name
        self._append(data)

    def _append(self, data: dict[str, Any]) -> None:
        self._write_line(orjson.dumps(data) + b"\n")

    def _write_line(self, line: bytes) -> None:
        if self._file.closed:
            raise JournalError(f"journal {self.path} is closed")
        view = memoryview(line)
        while view:  # a raw write may be short
            written = self._file.write(view)
            view = view[written:]
        if self.fsync:
            os.fsync(self._file.fileno())
        self.records += 1

    def close(self) -> None:
        if not self._file.closed:
            if self.fsync:
                os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def read(path: str | Path) -> Iterator[dict[str, Any]]:
        """Yield the records of a journal file in order (skipping a torn final line)."""
        with open(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        for number, line in enumerate(lines, start=1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise JournalError(f"journal {path}: line {number} is not JSON: {exc}") from exc
            if not isinstance(record, dict) or "type" not in record:
                raise JournalError(f"journal {path}: line {number} has no record type")
            yield record
        del torn  # never acknowledged, so never part of the journal

    @staticmethod
    def decode(record: dict[str, Any]) -> Any:
        """Rebuild the Struct a record was written from (Decimal fields come back exact)."""
        fields = dict(record)
        name = fields.pop("type")
        cls = _TYPES.get(name)
        if cls is None:
            raise JournalError(f"journal record type {name!r} has no Struct to decode into")
        return msgspec.convert(fields, cls, strict=False)
