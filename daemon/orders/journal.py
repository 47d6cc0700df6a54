"""The durable write-ahead journal: one checksummed JSON record per line.

Format. Each line is `<crc32 of the JSON, 8 lowercase hex digits> <JSON>\\n`, the JSON being the
record's typed line (`daemon/jsonl.py`: the Struct's msgspec JSON, Decimal as an exact string, with
a leading `"type"` naming its class). Plain lines rather than an embedded database: an append is one
`write` of a few hundred bytes (no page writes, no WAL checkpoint), `tail -f` and `jq` (after `cut
-d' ' -f2-`) still read it, and the checksum is what SQLite's WAL would have given us: a torn or
corrupted record is detected, never replayed.

Durability. `write` returns only after the line reached the OS (an unbuffered `write`: it survives
SIGKILL) and, with `fsync=True`, after `os.fsync` (power loss). Callers write a record BEFORE they
acknowledge the action it records (publish the event, send the order). A replay may pass
`fsync=False`: a crash there loses nothing that cannot be recomputed.

Reading (`Journal.read`) checks every line. A bad line (no newline at the end of the file, a wrong
checksum, not JSON, no record type) starts the *tail*: it and everything after it is reported in
`cut`. A crash can only damage the end of the file (the last write, or blocks a power loss left
unwritten), so a bad tail is cut: opening the journal for append (`Journal(path)`) first copies the
tail's bytes to `journal.cut-<n>` beside it, then truncates the file to its last good record, so
nothing is lost silently and nothing damaged is replayed. A bad line FOLLOWED by a good one is not a
torn write but damage to acknowledged history: `JournalCorrupt` names the line and the daemon
refuses to start (exit 2) until a person looks; cutting there would silently drop acknowledged
orders and fills.

`Journal.decode(record)` rebuilds the Struct of any record type the system writes: every event of
`daemon/events.py` and every Struct of `daemon/venue.py` (`OrderRequest`, `CancelRequest`, the
status reports). Never pickle: the journal must stay readable by other tools and versions.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson

from .. import events, venue
from ..jsonl import typed_line

CRC_WIDTH = 8  # hex digits of the CRC-32, then one space, then the JSON


class JournalError(ValueError):
    pass


class JournalCorrupt(JournalError):
    """A damaged record followed by intact ones: acknowledged history is damaged."""

    def __init__(self, path: Path, line: int, why: str, intact_line: int) -> None:
        self.path, self.line, self.why, self.intact_line = path, line, why, intact_line
        super().__init__(
            f"journal {path}: line {line} is damaged ({why}) but line {intact_line} after it is "
            "intact, so this is not a write torn by a crash; refusing to use it (move the "
            "damaged lines aside after inspecting them)")


def _registry() -> dict[str, type]:
    types: dict[str, type] = {}
    for module in (events, venue):
        for name in dir(module):
            obj = getattr(module, name)
            if (isinstance(obj, type) and issubclass(obj, msgspec.Struct)
                    and obj.__module__ == module.__name__ and obj is not events.Event
                    and obj is not events.TickBatch):
                types[name] = obj
    return types


_TYPES = _registry()


def encode_record(record: msgspec.Struct) -> bytes:
    """The journal line of one Struct (checksum, space, typed JSON, newline)."""
    return _frame(typed_line(record)[:-1])


def _frame(body: bytes) -> bytes:
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """(record, "") for a good line, else (None, why it is bad)."""
    if len(line) < CRC_WIDTH + 3 or line[CRC_WIDTH] != 0x20:
        return None, "no checksum"
    try:
        crc = int(line[:CRC_WIDTH], 16)
    except ValueError:
        return None, "no checksum"
    body = line[CRC_WIDTH + 1:]
    if zlib.crc32(body) != crc:
        return None, "checksum mismatch"
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, "not JSON"
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        return None, "no record type"
    return record, ""


@dataclass
class JournalContents:
    """What `Journal.read` found: the good records and the damaged tail (if any).

    Iterating yields the records (dicts with a "type"). `good_size` is the byte length of the
    intact prefix; `size - good_size` bytes form the tail described in `cut`."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    good_size: int = 0
    cut: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def tail_bytes(self) -> int:
        return self.size - self.good_size


class Journal:
    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        """Open for append. An existing journal is read first: a damaged tail is copied to
        `<stem>.cut-<n>` and truncated (see the module docstring); `recovered` holds what was
        read (None for a new file). Raises JournalCorrupt for damage before intact records."""
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recovered: JournalContents | None = None
        self.cut_file: Path | None = None
        existed = self.path.exists()
        if existed and self.path.stat().st_size:
            self.recovered = self.read(self.path)
            if self.recovered.tail_bytes:
                self.cut_file = self._cut_tail(self.recovered)
        self._file = open(self.path, "ab", buffering=0)  # unbuffered: each write reaches the OS
        if fsync and not existed:
            _fsync_dir(self.path.parent)  # the new file's directory entry survives power loss
        self.records = 0

    def write(self, record: msgspec.Struct) -> None:
        """Append one Struct as a typed record; durable (per `fsync`) when this returns."""
        self._write_line(encode_record(record))

    def write_many(self, records: Iterable[msgspec.Struct]) -> None:
        """Append several records with one write (one syscall, one fsync): the records of one
        action, in order. Durable (per `fsync`) when this returns."""
        lines = [encode_record(r) for r in records]
        if lines:
            self._write_line(b"".join(lines), len(lines))

    def write_raw(self, type_name: str, fields: dict[str, Any]) -> None:
        """Append a record that is not a Struct (kept for callers that build a dict)."""
        data = dict(fields)
        data["type"] = type_name
        self._write_line(_frame(orjson.dumps(data)))

    def _write_line(self, line: bytes, count: int = 1) -> None:
        if self._file.closed:
            raise JournalError(f"journal {self.path} is closed")
        view = memoryview(line)
        while view:  # a raw write may be short
            written = self._file.write(view)
            view = view[written:]
        if self.fsync:
            os.fsync(self._file.fileno())
        self.records += count

    def close(self) -> None:
        if not self._file.closed:
            if self.fsync:
                os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cut_tail(self, contents: JournalContents) -> Path:
        """Copy the damaged tail beside the journal, then truncate to the last good record."""
        with open(self.path, "rb") as f:
            f.seek(contents.good_size)
            tail = f.read()
        n = 1
        while (target := self.path.with_name(f"{self.path.stem}.cut-{n}")).exists():
            n += 1
        with open(target, "xb") as out:
            out.write(tail)
            out.flush()
            os.fsync(out.fileno())
        with open(self.path, "r+b") as f:
            f.truncate(contents.good_size)
            os.fsync(f.fileno())
        _fsync_dir(self.path.parent)
        contents.cut.append(f"{len(tail)} bytes moved to {target}")
        return target

    @staticmethod
    def read(path: str | Path) -> JournalContents:
        """Read and check every record (never modifies the file). Raises JournalCorrupt when a
        damaged line is followed by an intact one; a damaged tail is described in `cut`."""
        p = Path(path)
        with open(p, "rb") as f:
            data = f.read()
        contents = JournalContents(path=p, size=len(data))
        bad: tuple[int, str] | None = None  # (line number, why) of the first bad line
        pos, number = 0, 0
        while pos < len(data):
            number += 1
            end = data.find(b"\n", pos)
            if end < 0:
                if bad is None:
                    bad = (number, f"torn final line: {len(data) - pos} bytes without a newline")
                break
            record, why = _parse(data[pos:end])
            if record is None:
                if bad is None:
                    bad = (number, why)
            elif bad is not None:
                raise JournalCorrupt(p, bad[0], bad[1], number)
            else:
                contents.records.append(record)
                contents.good_size = end + 1
            pos = end + 1
        if bad is not None:
            contents.cut.append(f"line {bad[0]} and after ({contents.tail_bytes} bytes): {bad[1]}")
        return contents

    @staticmethod
    def decode(record: dict[str, Any]) -> Any:
        """Rebuild the Struct a record was written from (Decimal fields come back exact)."""
        fields = dict(record)
        name = fields.pop("type")
        cls = _TYPES.get(name)
        if cls is None:
            raise JournalError(f"journal record type {name!r} has no Struct to decode into "
                               f"(known: {', '.join(sorted(_TYPES))})")
        try:
            return msgspec.convert(fields, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise JournalError(f"journal record {name} {record.get('event_id', '')}: {exc}") from None


def record_types() -> dict[str, type]:
    """Every record type `decode` knows, by name."""
    return dict(_TYPES)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)
