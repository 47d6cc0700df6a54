"""Trades for the tearsheet: each fill classified as entry / exit / reverse, and each round trip
tied to the decision ids of the fills that opened and closed it.

A round trip runs from flat (or a flip) back to flat (or the next flip), as `orders/positions.py`
books it; walking the fills of one instrument in order with a running position finds the same
trips in the same order, so the book's trips (exact prices and PnL) are zipped with the walk's
decision ids. A mismatch in count (a restored journal's trips have no fills here) leaves the ids
empty rather than pairing the wrong ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

ENTRY, EXIT, REVERSE = "entry", "exit", "reverse"


@dataclass(frozen=True)
class FillMark:
    ts_ns: int
    instrument_id: str
    side: int  # +1 buy, -1 sell
    quantity: int  # lots
    price: int  # ticks
    kind: str  # entry | exit | reverse (closes one trip and opens the next)
    position_after: int
    fill_id: str
    decision_id: str


@dataclass(frozen=True)
class TradeRow:
    instrument_id: str
    direction: int
    quantity: int  # lots
    ts_open: int
    ts_close: int
    entry_price: Any  # Decimal, price units
    exit_price: Any
    net_pnl: Any  # Decimal, money (instrument currency)
    fills: int
    entry_decision_id: str
    exit_decision_id: str


def classify_fills(fills: Iterable[Any]) -> list[FillMark]:
    """Each fill with what it did to its instrument's position."""
    pos: dict[str, int] = {}
    out: list[FillMark] = []
    for f in fills:
        before = pos.get(f.instrument_id, 0)
        after = before + f.side * f.quantity
        if before == 0 or (before > 0) == (f.side > 0):
            kind = ENTRY
        elif after == 0 or (after > 0) == (before > 0):
            kind = EXIT
        else:
            kind = REVERSE
        pos[f.instrument_id] = after
        out.append(FillMark(f.ts_ns, f.instrument_id, f.side, f.quantity, f.price, kind, after,
                            f.fill_id, f.decision_id))
    return out


@dataclass
class _Open:
    decision_id: str
    fills: int = 1


def trade_rows(marks: Sequence[FillMark], round_trips: Sequence[Any]) -> list[TradeRow]:
    """The book's round trips, each with the decision ids of its opening and closing fills."""
    walked: dict[str, list[tuple[str, str, int]]] = {}  # per instrument: (entry id, exit id, fills)
    open_: dict[str, _Open] = {}
    for m in marks:
        trips = walked.setdefault(m.instrument_id, [])
        cur = open_.get(m.instrument_id)
        if m.kind == ENTRY:
            if cur is None:
                open_[m.instrument_id] = _Open(m.decision_id)
            else:
                cur.fills += 1
        else:
            if cur is not None:
                cur.fills += 1
                if m.kind == REVERSE or m.position_after == 0:
                    trips.append((cur.decision_id, m.decision_id, cur.fills))
                    del open_[m.instrument_id]
            if m.kind == REVERSE:
                open_[m.instrument_id] = _Open(m.decision_id)
    by_inst: dict[str, list[Any]] = {}
    for t in round_trips:
        by_inst.setdefault(t.instrument_id, []).append(t)
    rows: list[TradeRow] = []
    for inst, trips in by_inst.items():
        ids = walked.get(inst, [])
        matched = len(ids) == len(trips)
        for i, t in enumerate(trips):
            entry_id, exit_id, n = ids[i] if matched else ("", "", 0)
            rows.append(TradeRow(inst, t.direction, t.quantity, t.ts_open, t.ts_close,
                                 t.entry_price, t.exit_price, t.net_pnl, n, entry_id, exit_id))
    rows.sort(key=lambda r: (r.ts_close, r.ts_open))
    return rows
