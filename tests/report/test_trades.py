"""Fills classified as entries / exits / reversals, and round trips tied to their decision ids."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from himari.daemon.report.trades import ENTRY, EXIT, REVERSE, classify_fills, trade_rows


@dataclass
class F:  # the fields of events.Fill the report reads
    ts_ns: int
    instrument_id: str
    side: int
    quantity: int
    price: int
    fill_id: str
    decision_id: str


@dataclass
class Trip:  # the fields of orders.positions.RoundTrip the report reads
    instrument_id: str
    direction: int
    quantity: int
    entry_price: Decimal
    exit_price: Decimal
    net_pnl: Decimal
    ts_open: int
    ts_close: int


FILLS = [
    F(1, "A", +1, 2, 100, "f1", "d1"),  # open long 2
    F(2, "A", +1, 1, 101, "f2", "d2"),  # add: long 3
    F(3, "A", -1, 1, 103, "f3", "d3"),  # partial exit: long 2
    F(4, "B", -1, 5, 50, "f4", "d4"),  # another instrument: short 5
    F(5, "A", -1, 4, 104, "f5", "d5"),  # flip: closes the long, opens short 2
    F(6, "A", +1, 2, 102, "f6", "d6"),  # exit: flat
    F(7, "B", +1, 5, 49, "f7", "d7"),  # exit B: flat
]


def test_each_fill_is_an_entry_an_exit_or_a_reversal() -> None:
    marks = classify_fills(FILLS)
    assert [m.kind for m in marks] == [ENTRY, ENTRY, EXIT, ENTRY, REVERSE, EXIT, EXIT]
    assert [m.position_after for m in marks] == [2, 3, 2, -5, -2, 0, 0]
    assert [m.decision_id for m in marks] == [f.decision_id for f in FILLS]


def test_round_trips_carry_the_decision_ids_that_opened_and_closed_them() -> None:
    trips = [Trip("A", 1, 3, Decimal("1.00333"), Decimal("1.035"), Decimal("0.06"), 1, 5),
             Trip("A", -1, 2, Decimal("1.04"), Decimal("1.02"), Decimal("0.04"), 5, 6),
             Trip("B", -1, 5, Decimal("0.50"), Decimal("0.49"), Decimal("0.05"), 4, 7)]
    rows = trade_rows(classify_fills(FILLS), trips)
    assert [(r.instrument_id, r.ts_open, r.ts_close) for r in rows] == [("A", 1, 5), ("A", 5, 6),
                                                                         ("B", 4, 7)]
    assert [(r.entry_decision_id, r.exit_decision_id, r.fills) for r in rows] == [
        ("d1", "d5", 4), ("d5", "d6", 2), ("d4", "d7", 2)]
    assert rows[0].net_pnl == Decimal("0.06")  # the book's exact figures, untouched


def test_trips_the_fills_cannot_explain_get_no_ids_rather_than_wrong_ones() -> None:
    # a restored journal's earlier trip has no fills in this session
    trips = [Trip("A", 1, 1, Decimal(1), Decimal(1), Decimal(0), 0, 0),
             Trip("A", 1, 2, Decimal(1), Decimal(1), Decimal(0), 1, 2)]
    fills = [F(1, "A", +1, 2, 100, "f1", "d1"), F(2, "A", -1, 2, 100, "f2", "d2")]
    rows = trade_rows(classify_fills(fills), trips)
    assert [(r.entry_decision_id, r.exit_decision_id) for r in rows] == [("", ""), ("", "")]
