"""PositionBook: exact PnL on partial fills, adds, reductions, closes and flips, computed by hand.

Instrument: tick 0.01, multiplier 50, lot 1, so one tick on one lot is worth 0.50.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.instruments import Instrument
from himari.daemon.orders.positions import PositionBook

D = Decimal
ES = Instrument(id="ES", tick_size=D("0.01"), multiplier=D(50))
NQ = Instrument(id="NQ", tick_size=D("0.25"), multiplier=D(20))


def book() -> PositionBook:
    return PositionBook({"ES": ES, "NQ": NQ})


def test_long_adds_then_partial_reduce_fifo_then_close() -> None:
    b = book()
    b.apply_fill("ES", 1, 1, 10000, D("0.25"), 1)  # one order filled in two pieces
    b.apply_fill("ES", 1, 1, 10000, D("0.25"), 2)
    b.apply_fill("ES", 1, 1, 10030, D("0.25"), 3)
    assert b.quantity("ES") == 3
    assert b.avg_entry("ES") == Fraction(30030, 3)
    assert b.avg_price("ES") == D("100.10")
    b.mark("ES", 10050)
    assert b.unrealized_pnl("ES") == D("60.00")  # (3*10050 - 30030) = 120 tick-lots * 0.50
    b.apply_fill("ES", -1, 2, 10060, D("0.25"), 4)  # FIFO: closes the two lots bought at 10000
    assert b.quantity("ES") == 1
    assert b.realized_pnl("ES") == D("60.00")  # 2 * 60 ticks * 0.50
    assert b.avg_entry("ES") == 10030
    assert b.unrealized_pnl("ES") == D("15.00")  # marked at the fill: 30 ticks * 0.50
    b.apply_fill("ES", -1, 1, 10000, D("0.25"), 5)
    assert b.quantity("ES") == 0 and b.avg_price("ES") == 0
    assert b.realized_pnl("ES") == D("45.00")  # (120 - 30) tick-lots
    assert b.unrealized_pnl("ES") == 0
    assert b.fees("ES") == D("1.25")
    (trip,) = b.round_trips
    assert (trip.direction, trip.quantity) == (1, 3)
    assert trip.entry_price == D("100.10") and trip.exit_price == D("100.40")
    assert trip.pnl == D("45.00") and trip.fees == D("1.25") and trip.net_pnl == D("43.75")
    assert (trip.ts_open, trip.ts_close) == (1, 5)


def test_short_flip_to_long_realizes_closed_part_and_opens_rest_at_fill() -> None:
    b = book()
    b.apply_fill("ES", -1, 2, 10000, D("0.25"), 1)
    assert b.quantity("ES") == -2
    b.apply_fill("ES", 1, 5, 9950, D("1.00"), 2)  # covers 2, opens 3 long at 99.50
    assert b.quantity("ES") == 3
    assert b.realized_pnl("ES") == D("50.00")  # short 2 lots, 50 ticks each: 100 * 0.50
    assert b.avg_entry("ES") == 9950 and b.avg_price("ES") == D("99.50")
    assert b.unrealized_pnl("ES") == 0
    (trip,) = b.round_trips
    assert trip.direction == -1 and trip.quantity == 2
    assert trip.fees == D("0.65")  # 0.25 + 2/5 of the flip fill's 1.00
    b.mark("ES", 9900)
    assert b.unrealized_pnl("ES") == D("-75.00")  # 3 * -50 ticks * 0.50
    assert b.fees("ES") == D("1.25")
    assert b.equity(D("10000")) == D("9973.75")  # 10000 + 50 - 75 - 1.25
    b.apply_fill("ES", -1, 3, 9900, D("0.30"), 3)
    assert len(b.round_trips) == 2
    second = b.round_trips[1]
    assert second.fees == D("0.90")  # 0.60 remainder of the flip fee + 0.30
    assert second.pnl == D("-75.00") and second.direction == 1
    assert sum(t.fees for t in b.round_trips) == b.fees()
    stats = b.stats()
    assert (stats["trades"], stats["wins"], stats["losses"]) == (2, 1, 1)
    assert stats["win_rate"] == 0.5
    assert stats["net_pnl"] == D("50.00") - D("75.00") - D("1.55")


def test_flip_from_long_to_short_with_exact_one_fill() -> None:
    b = book()
    b.apply_fill("NQ", 1, 1, 60000, D(0), 1)  # NQ tick 0.25 * 20 = 5.00 per tick-lot
    b.apply_fill("NQ", -1, 3, 60004, D(0), 2)
    assert b.quantity("NQ") == -2
    assert b.realized_pnl("NQ") == D("20.00")  # 4 ticks * 5.00
    assert b.avg_price("NQ") == D("15001.00")
    b.mark("NQ", 60010)
    assert b.unrealized_pnl("NQ") == D("-60.00")  # short 2 lots, up 6 ticks


def test_fees_accumulate_exactly() -> None:
    b = book()
    b.apply_fill("ES", 1, 1, 100, D("0.1"), 1)
    b.apply_fill("ES", 1, 1, 100, D("0.2"), 2)
    assert b.fees("ES") == D("0.3")  # 0.1 + 0.2 != 0.3 in binary floats
    for i in range(1000):
        b.apply_fill("ES", 1 if i % 2 else -1, 1, 100 + i % 7, D("0.01"), 3 + i)
    assert b.fees() == D("10.3")


def test_average_entry_is_exact_when_not_a_terminating_decimal() -> None:
    b = book()
    for price in (100, 101, 101):
        b.apply_fill("ES", 1, 1, price, D(0), 1)
    assert b.avg_entry("ES") == Fraction(302, 3)
    b.mark("ES", 102)
    assert b.unrealized_pnl("ES") == D("2.00")  # 306 - 302 = 4 tick-lots, exact


def test_position_update_event() -> None:
    b = book()
    b.apply_fill("ES", -1, 4, 5000, D("0.40"), 9)
    ev = b.update_event("ES", "E-1", 9, "F-1")
    assert (ev.instrument_id, ev.quantity, ev.fill_id, ev.ts_ns) == ("ES", -4, "F-1", 9)
    assert ev.avg_price == D("50.00") and ev.realized_pnl == 0 and ev.unrealized_pnl == 0
    assert ev.fees == D("0.40")


def test_equity_sums_instruments_and_refuses_mixed_currencies() -> None:
    b = book()
    b.apply_fill("ES", 1, 1, 100, D("1"), 1)
    b.apply_fill("NQ", -1, 1, 400, D("1"), 1)
    b.mark("ES", 110)  # +10 ticks * 0.50
    b.mark("NQ", 396)  # +4 ticks * 5.00
    assert b.equity(D(1000)) == D(1000) + D(5) + D(20) - D(2)
    eur = Instrument(id="FDAX", tick_size=D("0.5"), multiplier=D(25), currency="EUR")
    mixed = PositionBook({"ES": ES, "FDAX": eur})
    mixed.apply_fill("ES", 1, 1, 100, D(0), 1)
    mixed.apply_fill("FDAX", 1, 1, 100, D(0), 1)
    with pytest.raises(ValueError, match="currencies"):
        mixed.equity(D(0))


def test_bad_inputs() -> None:
    b = book()
    with pytest.raises(KeyError):
        b.apply_fill("CL", 1, 1, 100, D(0), 1)
    with pytest.raises(ValueError):
        b.apply_fill("ES", 0, 1, 100, D(0), 1)
    with pytest.raises(ValueError):
        b.apply_fill("ES", 1, 0, 100, D(0), 1)
    assert b.quantity("ES") == 0


fills = st.lists(
    st.tuples(st.sampled_from((1, -1)), st.integers(1, 7), st.integers(-50, 20_000),
              st.integers(0, 300)),
    min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(fills)
def test_realized_plus_unrealized_equals_cash_flow(seq: list[tuple[int, int, int, int]]) -> None:
    """Any fills: realized + unrealized at the last fill price == sum(-side*qty*price) +
    position * last price, exactly; trips and fees add up."""
    b = book()
    cash = 0  # tick-lots
    position = 0
    fees = D(0)
    for ts, (side, qty, price, fee_cents) in enumerate(seq):
        fee = D(fee_cents) / 100
        b.apply_fill("ES", side, qty, price, fee, ts)
        cash -= side * qty * price
        position += side * qty
        fees += fee
    last = seq[-1][2]
    expected = ES.money(cash + position * last)
    assert b.quantity("ES") == position
    assert b.realized_pnl() + b.unrealized_pnl() == expected
    assert b.fees() == fees
    assert b.equity(D(0)) == expected - fees
    # Flatten at the last price: everything is realized and the round trips add up.
    if position:
        b.apply_fill("ES", -1 if position > 0 else 1, abs(position), last, D(0), len(seq))
    assert b.realized_pnl() == expected and b.unrealized_pnl() == 0
    assert sum((t.pnl for t in b.round_trips), D(0)) == expected
    assert sum((t.fees for t in b.round_trips), D(0)) == fees
    for t in b.round_trips:
        assert t.quantity > 0 and t.direction in (1, -1)
