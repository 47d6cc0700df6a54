"""Deterministic, unique ids.

A replay must produce byte-identical fills, so ids are counters, not random UUIDs. Each kind of id
has its own prefix; `session` keeps ids from different daemon runs apart (the live daemon passes a
session tag derived from its start time, a replay passes "R").
"""

from __future__ import annotations

import itertools


class IdSource:
    def __init__(self, session: str = "R") -> None:
        self._session = session
        self._counters: dict[str, itertools.count[int]] = {}

    def next(self, prefix: str) -> str:
        counter = self._counters.get(prefix)
        if counter is None:
            counter = self._counters[prefix] = itertools.count(1)
        return f"{prefix}-{self._session}-{next(counter)}"
