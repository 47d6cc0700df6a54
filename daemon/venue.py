"""The execution boundary: the order manager <-> an execution client (simulator, sandbox, broker).

The order manager sends `OrderRequest`s and cancels through an `ExecutionClient`; both calls are
non-blocking and their outcomes arrive later through the `ExecutionListener` the client was given:
accepted, rejected, fill (with the venue's execution id), cancelled, expired, and connection
changes. A client may also answer synchronously from inside `submit` / `cancel` (a simulator with
zero latency does); the order manager handles both. For reconciliation the client answers status
queries (async: a real client asks over the network): one order by client order id, the open
orders, the fills since a time, the positions and the account. Both sides use integer ticks and
lots; fees are `Decimal` in the instrument currency.

External fills: a fill for a client order id the order manager does not know (placed by hand, or
by an earlier run whose journal was lost) carries `instrument_id` and `side` as keyword arguments,
so it can still be booked to the position; clients always pass them.

`VenueClient` / `VenueListener` are the old names, kept as aliases.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import msgspec

CONNECTED, DISCONNECTED = "connected", "disconnected"


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


class ExecutionListener(Protocol):
    def on_accepted(self, client_order_id: str, venue_order_id: str, ts_ns: int) -> None: ...

    def on_rejected(self, client_order_id: str, reason: str, ts_ns: int) -> None: ...

    def on_fill(self, client_order_id: str, exec_id: str, quantity: int, price: int,
                fee: Decimal, liquidity: str, ts_ns: int, *, instrument_id: str = "",
                side: int = 0) -> None: ...

    def on_cancelled(self, client_order_id: str, reason: str, ts_ns: int) -> None: ...

    def on_expired(self, client_order_id: str, reason: str, ts_ns: int) -> None: ...

    def on_connection(self, state: str, ts_ns: int) -> None: ...  # CONNECTED | DISCONNECTED


class ExecutionClient(Protocol):
    def set_listener(self, listener: ExecutionListener) -> None: ...

    def submit(self, request: OrderRequest) -> None: ...

    def cancel(self, client_order_id: str, ts_ns: int) -> None: ...

    @property
    def connected(self) -> bool: ...

    async def query_order(self, client_order_id: str) -> OrderStatusReport | None: ...

    async def open_orders(self) -> list[OrderStatusReport]: ...

    async def fills_since(self, ts_ns: int) -> list[FillReport]: ...

    async def positions(self) -> list[PositionReport]: ...

    async def account(self) -> AccountReport: ...


VenueListener = ExecutionListener
VenueClient = ExecutionClient


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
