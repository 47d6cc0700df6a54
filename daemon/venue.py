"""The boundary between the order manager and a venue (simulator, sandbox or real broker).

The order manager sends `OrderRequest`s and cancels through a `VenueClient`; the venue answers by
calling the `VenueListener` it was given. Both sides use integer ticks and lots; fees are `Decimal`
in the instrument currency. A simulated venue may call the listener synchronously from `submit`
(for example an immediate reject) or later from the replay loop (fills on later ticks); the order
manager must handle both.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import msgspec


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    instrument_id: str
    side: int  # +1 buy, -1 sell
    quantity: int  # lots, > 0
    order_type: str  # market | limit | stop
    price: int | None  # limit price or stop trigger, ticks
    time_in_force: str  # gtc | ioc | day
    ts_ns: int  # when the order manager sent it
    reduce_only: bool = False


class VenueListener(Protocol):
    def on_accepted(self, client_order_id: str, venue_order_id: str, ts_ns: int) -> None: ...

    def on_rejected(self, client_order_id: str, reason: str, ts_ns: int) -> None: ...

    def on_fill(self, client_order_id: str, quantity: int, price: int, fee: Decimal,
                liquidity: str, ts_ns: int) -> None: ...

    def on_cancelled(self, client_order_id: str, reason: str, ts_ns: int) -> None: ...

    def on_expired(self, client_order_id: str, reason: str, ts_ns: int) -> None: ...


class VenueClient(Protocol):
    def set_listener(self, listener: VenueListener) -> None: ...

    def submit(self, request: OrderRequest) -> None: ...

    def cancel(self, client_order_id: str, ts_ns: int) -> None: ...


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A cancel the order manager asked the venue for (journaled before it is sent)."""

    ts_ns: int
    order_id: str
    client_order_id: str
    reason: str = ""


# ---- status reports: what an execution client answers to reconciliation queries


class OrderStatusReport(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    venue_order_id: str
    instrument_id: str
    side: int
    quantity: int  # lots ordered
    filled: int  # lots filled so far
    status: str  # accepted | partially_filled | filled | cancelled | rejected | expired
    ts_ns: int


class FillReport(msgspec.Struct, frozen=True, kw_only=True):
    exec_id: str
    client_order_id: str
    instrument_id: str
    side: int
    quantity: int
    price: int
    fee: Decimal
    liquidity: str
    ts_ns: int


class PositionReport(msgspec.Struct, frozen=True, kw_only=True):
    instrument_id: str
    quantity: int  # signed lots


class AccountReport(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    cash: Decimal
    equity: Decimal
