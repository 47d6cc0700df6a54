"""Net positions per instrument with exact PnL.

Units: quantities are signed lots (+ long, - short), prices integer ticks. Every PnL amount is kept
as an integer number of tick-lots (price difference in ticks times lots) and turned into money only
at the edge with `Instrument.money(tick_lots)` (= tick_size * lot_size * multiplier * tick_lots,
Decimal, exact). Fees are Decimal in the instrument currency and kept apart from PnL.

Matching is FIFO: a reducing fill closes the oldest open lots first, so
    realized += d * (fill_price - lot_price) * lots_closed          (d = +1 long, -1 short)
is always an integer and the open cost `cost = sum(lots * price)` of the remaining lots stays an
integer; the average entry price is `Fraction(cost, abs(quantity))` ticks, exact.
    unrealized = d * (mark * abs(quantity) - cost)
with `mark` the last price given to `mark()` or, after a fill, that fill's price. Hence, for any
sequence of fills, realized + unrealized at the last fill price equals the cash-flow PnL
sum(-side * lots * price) + quantity * last_price (fees excluded); the tests check it.

A fill that crosses zero (a flip) closes the whole open position (realizing it) and opens the
remainder at the fill price. Round trips run from flat to flat (or to a flip): entry and exit are
the lot-weighted average prices of the opening and the closing fills; a flip fill's fee is split
between the trip it closes and the one it opens in proportion to the lots, the closing share rounded
to 1e-10 and the opening share the remainder, so trip fees always sum exactly to the book's fees.

`equity(cash0) = cash0 + realized + unrealized - fees`, summed over instruments (one currency).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from ..events import PositionUpdate
from ..instruments import Instrument

ZERO = Decimal(0)
FEE_SPLIT_QUANTUM = Decimal("1e-10")  # a flip fee's closing share; finite, so sums stay exact


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A closed trade: from flat (or a flip) back to flat (or the next flip)."""

    instrument_id: str
    direction: int  # +1 long, -1 short
    quantity: int  # lots opened (== lots closed)
    entry_price: Decimal  # lot-weighted average of the opening fills, price units
    exit_price: Decimal
    pnl: Decimal  # gross realized PnL, money
    fees: Decimal
    ts_open: int
    ts_close: int

    @property
    def net_pnl(self) -> Decimal:
        return self.pnl - self.fees


@dataclass(slots=True)
class _Trip:
    direction: int
    ts_open: int
    opened: int = 0
    entry_notional: int = 0  # ticks * lots
    closed: int = 0
    exit_notional: int = 0
    pnl: int = 0  # tick-lots
    fees: Decimal = ZERO


@dataclass(slots=True)
class Position:
    instrument_id: str
    quantity: int = 0
    cost: int = 0  # sum of lots * price_ticks over the open FIFO lots
    realized: int = 0  # tick-lots
    fees: Decimal = ZERO
    mark: int | None = None
    lots: deque[list[int]] = field(default_factory=deque)  # [lots, price_ticks], oldest first
    trip: _Trip | None = None
    fills: int = 0

    @property
    def direction(self) -> int:
        return (self.quantity > 0) - (self.quantity < 0)

    @property
    def avg_entry(self) -> Fraction | None:
        """Average entry price of the open lots in ticks, exact; None when flat."""
        return Fraction(self.cost, abs(self.quantity)) if self.quantity else None

    @property
    def unrealized(self) -> int:
        """Unrealized PnL in tick-lots at `mark` (0 when flat or never marked)."""
        if not self.quantity or self.mark is None:
            return 0
        return self.direction * (self.mark * abs(self.quantity) - self.cost)


class PositionBook:
    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self._instruments = instruments
        self._positions: dict[str, Position] = {}
        self.round_trips: list[RoundTrip] = []

    # ---- updates

    def apply_fill(self, instrument_id: str, side: int, quantity: int, price: int, fee: Decimal,
                   ts_ns: int) -> Position:
        """Book one execution: `quantity` lots (> 0) on `side` (+1 buy, -1 sell) at `price`."""
        inst = self._instrument(instrument_id)
        if side not in (1, -1):
            raise ValueError(f"fill side {side!r} must be +1 or -1")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise ValueError(f"fill quantity {quantity!r} must be an int > 0")
        pos = self._positions.get(instrument_id)
        if pos is None:
            pos = self._positions[instrument_id] = Position(instrument_id)
        pos.fills += 1
        pos.fees += fee
        remaining = quantity
        if pos.quantity and pos.direction != side:  # reducing: close FIFO lots
            d = pos.direction
            trip = pos.trip
            assert trip is not None
            while remaining and pos.lots:
                lot = pos.lots[0]
                take = min(remaining, lot[0])
                pnl = d * (price - lot[1]) * take
                pos.realized += pnl
                trip.pnl += pnl
                pos.cost -= take * lot[1]
                lot[0] -= take
                if lot[0] == 0:
                    pos.lots.popleft()
                pos.quantity += side * take
                remaining -= take
                trip.closed += take
                trip.exit_notional += take * price
            closed = quantity - remaining
            if remaining:  # flip: split the fee by lots; the opening share is the remainder
                closing_fee = (fee * closed / quantity).quantize(FEE_SPLIT_QUANTUM)
                trip.fees += closing_fee
                fee = fee - closing_fee
            else:
                trip.fees += fee
            if pos.quantity == 0:
                self.round_trips.append(self._close_trip(inst, trip, ts_ns))
                pos.trip = None
        if remaining:  # opening or adding
            if pos.trip is None:
                pos.trip = _Trip(direction=side, ts_open=ts_ns)
                pos.trip.fees += fee
            elif quantity == remaining:  # a pure add (a flip's fee share was booked above)
                pos.trip.fees += fee
            pos.lots.append([remaining, price])
            pos.cost += remaining * price
            pos.quantity += side * remaining
            pos.trip.opened += remaining
            pos.trip.entry_notional += remaining * price
        pos.mark = price
        return pos

    def mark(self, instrument_id: str, price_ticks: int) -> None:
        """Set the price unrealized PnL is measured at."""
        self._instrument(instrument_id)
        pos = self._positions.get(instrument_id)
        if pos is None:
            pos = self._positions[instrument_id] = Position(instrument_id)
        pos.mark = price_ticks

    # ---- queries

    def get(self, instrument_id: str) -> Position | None:
        return self._positions.get(instrument_id)

    def quantity(self, instrument_id: str) -> int:
        pos = self._positions.get(instrument_id)
        return pos.quantity if pos else 0

    def avg_entry(self, instrument_id: str) -> Fraction | None:
        pos = self._positions.get(instrument_id)
        return pos.avg_entry if pos else None

    def avg_price(self, instrument_id: str) -> Decimal:
        """Average entry in price units (Decimal division, 28 significant digits; display
        only: PnL never uses it). 0 when flat."""
        pos = self._positions.get(instrument_id)
        if pos is None or not pos.quantity:
            return ZERO
        inst = self._instrument(instrument_id)
        return inst.tick_size * Decimal(pos.cost) / Decimal(abs(pos.quantity))

    def realized_pnl(self, instrument_id: str | None = None) -> Decimal:
        return self._sum(instrument_id, lambda inst, p: inst.money(p.realized))

    def unrealized_pnl(self, instrument_id: str | None = None) -> Decimal:
        return self._sum(instrument_id, lambda inst, p: inst.money(p.unrealized))

    def fees(self, instrument_id: str | None = None) -> Decimal:
        return self._sum(instrument_id, lambda inst, p: p.fees)

    def equity(self, cash0: Decimal) -> Decimal:
        """cash0 + realized + unrealized - fees over all instruments (one currency).

        Called on every bar close to mark the account, so it does one Decimal multiply per
        instrument (PnL summed in integer tick-lots first) instead of three sums."""
        total = cash0
        currency = None
        for instrument_id, pos in self._positions.items():
            inst = self._instrument(instrument_id)
            if currency is None:
                currency = inst.currency
            elif inst.currency != currency:
                raise ValueError(f"equity over several currencies {currency}, {inst.currency} "
                                 "needs FX rates")
            pnl = pos.realized + pos.unrealized
            if pnl:
                total += inst.money(pnl)
            total -= pos.fees
        return total

    def update_event(self, instrument_id: str, event_id: str, ts_ns: int,
                     fill_id: str = "") -> PositionUpdate:
        pos = self._positions.get(instrument_id) or Position(instrument_id)
        inst = self._instrument(instrument_id)
        return PositionUpdate(
            event_id=event_id, ts_ns=ts_ns, instrument_id=instrument_id, quantity=pos.quantity,
            avg_price=self.avg_price(instrument_id), realized_pnl=inst.money(pos.realized),
            unrealized_pnl=inst.money(pos.unrealized), fees=pos.fees, fill_id=fill_id)

    def stats(self) -> dict[str, int | Decimal | float]:
        """Round-trip statistics for the report. A win has net PnL > 0, a loss < 0."""
        trips = self.round_trips
        wins = sum(1 for t in trips if t.net_pnl > 0)
        losses = sum(1 for t in trips if t.net_pnl < 0)
        return {
            "trades": len(trips),
            "wins": wins,
            "losses": losses,
            "win_rate": wins / len(trips) if trips else 0.0,
            "gross_pnl": sum((t.pnl for t in trips), ZERO),
            "fees": sum((t.fees for t in trips), ZERO),
            "net_pnl": sum((t.net_pnl for t in trips), ZERO),
        }

    # ---- internals

    def _instrument(self, instrument_id: str) -> Instrument:
        try:
            return self._instruments[instrument_id]
        except KeyError:
            raise KeyError(f"unknown instrument {instrument_id!r}") from None

    def _sum(self, instrument_id: str | None,
             value: Callable[[Instrument, Position], Decimal]) -> Decimal:
        ids = [instrument_id] if instrument_id is not None else list(self._positions)
        total = ZERO
        for i in ids:
            pos = self._positions.get(i)
            if pos is not None:
                total += value(self._instrument(i), pos)
        return total

    @staticmethod
    def _close_trip(inst: Instrument, trip: _Trip, ts_ns: int) -> RoundTrip:
        return RoundTrip(
            instrument_id=inst.id, direction=trip.direction, quantity=trip.opened,
            entry_price=inst.tick_size * Decimal(trip.entry_notional) / Decimal(trip.opened),
            exit_price=inst.tick_size * Decimal(trip.exit_notional) / Decimal(trip.closed),
            pnl=inst.money(trip.pnl), fees=trip.fees, ts_open=trip.ts_open, ts_close=ts_ns)
