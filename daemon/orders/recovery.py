"""Rebuild the order manager's state from its journal (see `journal.py`).

Contract shared by the journal reader (this module) and the order manager (`restore`): the
journal's records, in order, rebuild every order (with its state machine history), the positions,
the set of execution ids already booked (so a fill replayed by the venue after a restart is booked
once) and the id counters (so new client order ids never repeat an old one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .positions import PositionBook
from .state import Order


@dataclass
class RecoveredState:
    orders: dict[str, Order]  # order id -> order, as the journal last saw it
    positions: PositionBook
    exec_ids: set[str] = field(default_factory=set)  # venue execution ids already booked
    fills: int = 0
    records: int = 0
    cut: list[str] = field(default_factory=list)  # what was cut (a torn or corrupt tail), said
    last_ts_ns: int = 0

    def in_flight(self) -> list[Order]:
        """Orders the venue may still be working: resolve them before any new order."""
        return [o for o in self.orders.values() if not o.is_terminal]
