"""Typed events that travel on the bus.

Every event is a frozen msgspec Struct with an integer nanosecond timestamp (`ts_ns`, UTC epoch) and
a unique `event_id`. Prices are integer ticks and quantities integer lots of the event's instrument
(see `instruments.py`); money (fees, PnL) is `Decimal`. Ids chain consequences together: a decision
names the bar or matrix it was made on, an order intent its decision, an order its intent, a fill its
order, so one id follows a tick's consequences through logs, reports and the journal.

Market data moves as a columnar `TickBatch` (numpy arrays), not as one event per tick: a replay
yields tens of thousands of ticks per batch, a live socket one or a few.
"""

from __future__ import annotations

from decimal import Decimal
from enum import IntEnum
from typing import Any

import msgspec
import numpy as np


class Side(IntEnum):
    BUY = 1
    SELL = -1


class TickKind(IntEnum):
    TRADES = 0
    QUOTES = 1


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every bus event."""

    event_id: str
    ts_ns: int


# --------------------------------------------------------------------------------------------
# Market data


class TickBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A run of ticks for one instrument, as parallel numpy arrays of equal length.

    - `ts_ns` int64: event time, non-decreasing within a batch.
    - `price` int64 ticks: the trade price; for quotes the mid rounded down to the tick.
    - `size` int64 lots: trade size; for quotes the smaller of bid and ask size (0 if unknown).
    - `side` int8: aggressor +1 buy, -1 sell, 0 unknown (always 0 for quotes).
    - `bid`, `ask` int64 ticks: top of book for quotes; equal to `price` for trades, so the venue
      fills buys at `ask` and sells at `bid` for both kinds.
    """

    instrument_id: str
    kind: TickKind
    ts_ns: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray
    bid: np.ndarray
    ask: np.ndarray

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    @staticmethod
    def from_trades(
        instrument_id: str, ts_ns: np.ndarray, price: np.ndarray, size: np.ndarray,
        side: np.ndarray | None = None,
    ) -> "TickBatch":
        ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
        px = np.ascontiguousarray(price, dtype=np.int64)
        sz = np.ascontiguousarray(size, dtype=np.int64)
        sd = (np.zeros(ts.shape[0], dtype=np.int8) if side is None
              else np.ascontiguousarray(side, dtype=np.int8))
        return TickBatch(instrument_id=instrument_id, kind=TickKind.TRADES, ts_ns=ts, price=px,
                         size=sz, side=sd, bid=px, ask=px)

    @staticmethod
    def from_quotes(
        instrument_id: str, ts_ns: np.ndarray, bid: np.ndarray, ask: np.ndarray,
        size: np.ndarray | None = None,
    ) -> "TickBatch":
        ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
        b = np.ascontiguousarray(bid, dtype=np.int64)
        a = np.ascontiguousarray(ask, dtype=np.int64)
        n = ts.shape[0]
        sz = (np.zeros(n, dtype=np.int64) if size is None
              else np.ascontiguousarray(size, dtype=np.int64))
        mid = (b + a) // 2
        return TickBatch(instrument_id=instrument_id, kind=TickKind.QUOTES, ts_ns=ts, price=mid,
                         size=sz, side=np.zeros(n, dtype=np.int8), bid=b, ask=a)

    def slice(self, start: int, stop: int) -> "TickBatch":
        return TickBatch(instrument_id=self.instrument_id, kind=self.kind,
                         ts_ns=self.ts_ns[start:stop], price=self.price[start:stop],
                         size=self.size[start:stop], side=self.side[start:stop],
                         bid=self.bid[start:stop], ask=self.ask[start:stop])


class TradeTick(Event, frozen=True, kw_only=True):
    """One trade, as a live adapter receives it (edge event; batched before the hot path)."""

    instrument_id: str
    price: int
    size: int
    side: int = 0


class QuoteTick(Event, frozen=True, kw_only=True):
    """One top-of-book quote (edge event)."""

    instrument_id: str
    bid: int
    ask: int
    bid_size: int = 0
    ask_size: int = 0


class Bar(Event, frozen=True, kw_only=True):
    """A closed bar. `ts_ns` equals `ts_close`. Prices in ticks, volume in lots."""

    instrument_id: str
    spec: str
    ts_open: int
    ts_close: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    n_ticks: int


class FeatureMatrix(Event, frozen=True, kw_only=True):
    """A rolling feature matrix published on a bar close.

    `values` is float32 of shape (rows, cols), row -1 the newest bar; `ready` is False until every
    row is fully warm. `context` carries scalars that downstream rules need (for example the FVG
    mitigation details and the MLMI and NW-RQK signals used by the synergy detector).
    """

    instrument_id: str
    kind: str  # "tactical" | "strategic"
    bar_id: str
    values: Any  # np.ndarray float32 (rows, cols)
    ready: bool
    context: dict[str, float] = {}


class SynergyDetected(Event, frozen=True, kw_only=True):
    """A completed ordered pattern of MLMI, NW-RQK and FVG signals (spec features.md section 4)."""

    instrument_id: str
    synergy_type: str  # TYPE_1 .. TYPE_4
    direction: int  # +1 long, -1 short
    confidence: float
    synergy_strength: float
    signal_sequence: list[dict[str, Any]]
    metadata: dict[str, Any]
    market_context: dict[str, Any]
    tactical_matrix_id: str
    strategic_matrix_id: str


# --------------------------------------------------------------------------------------------
# Decisions, intents and risk


class Decision(Event, frozen=True, kw_only=True):
    """What a strategy wants: a target signed position in lots, made on `source_id`."""

    strategy_id: str
    instrument_id: str
    source_id: str  # the bar / matrix / synergy event the decision was made on
    target_position: int
    confidence: float = 1.0
    reason: str = ""
    # Optional explanation (the ensemble's per-agent breakdown, disagreement, scale); the decision
    # record writes its keys at the top level and nothing when it is empty.
    details: dict[str, Any] = {}


class OrderIntent(Event, frozen=True, kw_only=True):
    """An order a strategy asks for; risk validates it before the order manager sees it.

    `price` is the limit price (limit orders) or trigger (stop orders) in ticks.
    `stop_loss` / `take_profit` (ticks) request a one-cancels-other bracket around the entry.
    """

    decision_id: str
    strategy_id: str
    instrument_id: str
    side: int  # Side
    quantity: int  # lots, > 0
    order_type: str = "market"  # market | limit | stop
    price: int | None = None
    stop_loss: int | None = None
    take_profit: int | None = None
    reduce_only: bool = False
    time_in_force: str = "gtc"  # gtc | ioc | day


class RiskVerdict(Event, frozen=True, kw_only=True):
    """Risk's answer to an intent. On rejection `rule` names the check and `values` its numbers."""

    intent_id: str
    decision_id: str
    approved: bool
    quantity: int  # approved quantity in lots (0 when rejected)
    rule: str = ""
    reason: str = ""
    values: dict[str, float] = {}
    stop_loss: int | None = None  # ticks; set when risk sized the entry and planned its bracket
    take_profit: int | None = None


# --------------------------------------------------------------------------------------------
# Orders and fills


class OrderEvent(Event, frozen=True, kw_only=True):
    """Base of the order lifecycle events."""

    order_id: str
    client_order_id: str
    instrument_id: str


class OrderSubmitted(OrderEvent, frozen=True, kw_only=True):
    side: int
    quantity: int
    order_type: str
    price: int | None = None
    decision_id: str = ""
    intent_id: str = ""
    parent_order_id: str = ""  # set on bracket legs


class OrderAccepted(OrderEvent, frozen=True, kw_only=True):
    venue_order_id: str = ""


class OrderPartiallyFilled(OrderEvent, frozen=True, kw_only=True):
    fill_id: str
    filled_quantity: int
    leaves_quantity: int


class OrderFilled(OrderEvent, frozen=True, kw_only=True):
    fill_id: str
    filled_quantity: int


class OrderCancelled(OrderEvent, frozen=True, kw_only=True):
    reason: str = ""


class OrderRejected(OrderEvent, frozen=True, kw_only=True):
    reason: str = ""


class OrderExpired(OrderEvent, frozen=True, kw_only=True):
    reason: str = ""


class Fill(Event, frozen=True, kw_only=True):
    """An execution: `quantity` lots at `price` ticks; `fee` in the instrument currency."""

    fill_id: str
    order_id: str
    client_order_id: str
    instrument_id: str
    side: int
    quantity: int
    price: int
    fee: Decimal
    liquidity: str = "taker"  # taker | maker
    decision_id: str = ""
    exec_id: str = ""  # the venue's execution id: a fill delivered twice is booked once


class PositionUpdate(Event, frozen=True, kw_only=True):
    """Net position after a fill. Money in the instrument currency, exact."""

    instrument_id: str
    quantity: int  # signed lots
    avg_price: Decimal  # average entry price (price units, not ticks); 0 when flat
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    fill_id: str = ""


class ExecutionDiscrepancy(Event, frozen=True, kw_only=True):
    """The venue and our books disagreed; the books now follow the venue (the broker is the truth).

    `kind`: duplicate_fill (same exec_id again: ignored), overfill (more than the order's leaves:
    booked), fill_after_cancel (a fill for an order we had as cancelled: booked), external_fill (an
    order we never sent: booked), order_absent (an in-flight order the venue does not know),
    position_mismatch (reconciliation found another position: adjusted by `quantity` lots at
    `price`, which a journal rebuild books again)."""

    kind: str
    instrument_id: str = ""
    client_order_id: str = ""
    exec_id: str = ""
    quantity: int = 0  # signed lots involved (0 when not a quantity)
    price: int = 0  # ticks: the price a position_mismatch adjustment was booked at
    detail: str = ""
