"""The cache: the one place to read instruments, orders, positions, the account and last prices.

Engines write, everyone else reads. The order manager owns the order records and the position book
(a journal restore replaces them, so the cache reads them through the manager, never a copy), the
runner writes the last tick of each instrument, and the portfolio keeps the account. Strategies, risk, reports and
(later) the admin API read through the methods below instead of reaching into an engine.

Units are the core's: prices in integer ticks, quantities in signed integer lots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from himari.daemon.instruments import Instrument
from himari.daemon.orders.positions import PositionBook
from himari.daemon.orders.state import Order

if TYPE_CHECKING:
    from himari.daemon.portfolio import Portfolio


class OrderBookOwner(Protocol):
    orders: dict[str, Order]
    positions: PositionBook


class Cache:
    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        self._owner: OrderBookOwner | None = None
        self.portfolio: Portfolio | None = None  # set when the portfolio is built
        self._last_price: dict[str, int] = {}
        self._last_tick_ns: dict[str, int] = {}

    def attach_orders(self, owner: OrderBookOwner) -> None:
        """The order manager whose orders and positions this cache reads."""
        self._owner = owner

    @property
    def orders(self) -> dict[str, Order]:
        assert self._owner is not None, "the cache has no order manager attached"
        return self._owner.orders

    @property
    def positions(self) -> PositionBook:
        assert self._owner is not None, "the cache has no order manager attached"
        return self._owner.positions

    # ---- written by the runner: the last tick actually seen (not a bar's close time)

    def on_tick(self, instrument_id: str, price_ticks: int, ts_ns: int) -> None:
        self._last_price[instrument_id] = price_ticks
        self._last_tick_ns[instrument_id] = ts_ns

    # ---- reads

    def instrument(self, instrument_id: str) -> Instrument:
        return self.instruments[instrument_id]

    def last_price(self, instrument_id: str) -> int | None:
        return self._last_price.get(instrument_id)

    def last_tick_ns(self, instrument_id: str) -> int | None:
        return self._last_tick_ns.get(instrument_id)

    def position(self, instrument_id: str) -> int:
        return self.positions.quantity(instrument_id)

    def open_orders(self, instrument_id: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if not o.is_terminal
                and (instrument_id is None or o.instrument_id == instrument_id)]

    def working_lots(self, instrument_id: str) -> tuple[int, int]:
        """Lots still able to fill on working orders of an instrument: (buys, sells)."""
        buys = sells = 0
        for o in self.orders.values():
            if o.instrument_id == instrument_id and not o.is_terminal:
                if o.side > 0:
                    buys += o.leaves
                else:
                    sells += o.leaves
        return buys, sells
