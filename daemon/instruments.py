"""Instruments and exact conversion between prices/quantities and integer ticks/lots."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import msgspec


class InstrumentError(ValueError):
    pass


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """A tradable instrument.

    The core holds prices as integer ticks (`price = ticks * tick_size`) and quantities as integer
    lots (`quantity = lots * lot_size`). The value of one tick for one lot, in `currency`, is
    `tick_size * lot_size * multiplier`.
    """

    id: str
    tick_size: Decimal
    lot_size: Decimal = Decimal(1)
    multiplier: Decimal = Decimal(1)
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("tick_size", "lot_size", "multiplier"):
            value = getattr(self, name)
            if not value.is_finite() or value <= 0:
                raise InstrumentError(f"instrument {self.id}: {name} = {value} must be > 0")

    # ---- scalar conversions (boundaries: config, broker JSON, reports)

    @property
    def tick_value(self) -> Decimal:
        """Money per tick per lot."""
        return self.tick_size * self.lot_size * self.multiplier

    def price_to_ticks(self, price: Decimal | str | int) -> int:
        try:
            p = Decimal(price)
        except (InvalidOperation, TypeError) as exc:
            raise InstrumentError(f"instrument {self.id}: price {price!r} is not a number") from exc
        ticks = p / self.tick_size
        if not p.is_finite() or ticks != ticks.to_integral_value():
            raise InstrumentError(
                f"instrument {self.id}: price {price} is not a multiple of tick_size {self.tick_size}")
        return int(ticks)

    def ticks_to_price(self, ticks: int) -> Decimal:
        return self.tick_size * ticks

    def qty_to_lots(self, quantity: Decimal | str | int) -> int:
        q = Decimal(quantity)
        lots = q / self.lot_size
        if not q.is_finite() or lots != lots.to_integral_value():
            raise InstrumentError(
                f"instrument {self.id}: quantity {quantity} is not a multiple of lot_size {self.lot_size}")
        return int(lots)

    def lots_to_qty(self, lots: int) -> Decimal:
        return self.lot_size * lots

    def money(self, tick_lots: int) -> Decimal:
        """Convert an amount in tick*lot units (price difference in ticks times lots) to money."""
        return self.tick_value * tick_lots
