"""Deterministic, unique ids.

A replay must produce byte-identical fills, so ids are counters, not random UUIDs: `<prefix>-
<session>-<n>`. Each kind of id has its own prefix and counter; `session` keeps ids from different
daemon runs apart, because a broker refuses (or, worse, confuses) a client order id it has seen.

- A replay (`himari replay`) uses the session "R": the same inputs give the same ids.
- A run with a state directory (`IdSource.for_state_dir`) takes a new session each start: the
  start time in milliseconds, base 36 (8 characters until the year 5188), made strictly greater
  than the session the directory last used (persisted in `DIR/session` before the first id is
  issued) and than any session its journal holds. So ids never repeat across restarts, even when
  the wall clock steps back, and stay unique (by time) if the directory is lost.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable
from pathlib import Path

SESSION_FILE = "session"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def to_base36(n: int) -> str:
    if n < 0:
        raise ValueError(f"session number {n} must be >= 0")
    out = []
    while True:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
        if not n:
            return "".join(reversed(out))


def from_base36(text: str) -> int | None:
    try:
        return int(text, 36)
    except ValueError:
        return None


class IdSource:
    def __init__(self, session: str = "R") -> None:
        self._session = session
        self._counters: dict[str, itertools.count[int]] = {}

    @property
    def session(self) -> str:
        return self._session

    def next(self, prefix: str) -> str:
        counter = self._counters.get(prefix)
        if counter is None:
            counter = self._counters[prefix] = itertools.count(1)
        return f"{prefix}-{self._session}-{next(counter)}"

    @classmethod
    def for_state_dir(cls, state_dir: str | Path, *, now_ms: int | None = None,
                      seen: Iterable[str] = ()) -> "IdSource":
        """A new session for a run on `state_dir` (which the caller holds locked), persisted
        before it is returned. `seen`: sessions found in the journal (`RecoveredState.sessions`)."""
        path = Path(state_dir) / SESSION_FILE
        floor = -1
        try:
            last = from_base36(path.read_text(encoding="ascii").strip())
            if last is not None:
                floor = last
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        for s in seen:
            value = from_base36(s)
            if value is not None and len(s) >= 8:  # ignore "R", "T" and other short tags
                floor = max(floor, value)
        value = max(now_ms if now_ms is not None else time.time_ns() // 1_000_000, floor + 1)
        session = to_base36(value)
        tmp = path.with_name(f".{SESSION_FILE}.tmp")
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(session + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return cls(session)
