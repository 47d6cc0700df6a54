"""The order manager: one state machine per order, positions, and one-cancels-other brackets.

It is the execution client's `ExecutionListener` and reaches a venue only through an
`ExecutionClient` (daemon/venue.py). Callbacks are synchronous; a venue may call back from inside
`submit` / `cancel` (an immediate reject, fill or cancel confirmation) or later, and both work: an
order is registered and SUBMITTED before it is sent, and bracket resizing tolerates being re-entered.

Durability (write-ahead): with a journal, the OrderIntent, then the submission (OrderSubmitted + the
OrderRequest), a cancel request (`CancelRequest`), every order event, every Fill (with the venue's
`exec_id`) and every ExecutionDiscrepancy are written before they are published or sent.

Fills are identified by the venue's execution id and each is applied exactly once, logged, and
counted in `counters`; what does not fit the order is still booked, because the position follows
the venue, and raises an `ExecutionDiscrepancy`:
- a duplicate exec id is ignored (`duplicate_fill`);
- a fill beyond the order's quantity (`overfill`) or after a terminal state (`late_fill`: it raced a
  confirmed cancel) is booked to the order's fills and the position; the state never leaves a
  terminal state;
- a fill for an unknown client order id is booked to its instrument's position when the client
  gives `instrument_id` and `side` (`external_fill`; without them it cannot be booked and is only
  reported).
Outcomes that never come, status reports, reconciliation and restart are in `reconcile.py`; bracket
legs in `brackets.py`.

Per fill the bus sees, in order: OrderPartiallyFilled | OrderFilled (`filled_quantity` is the
order's cumulative filled lots; the Fill carries this execution's lots), then the Fill, then the
PositionUpdate, and those three are contiguous: an event the manager raises while its own events
are being dispatched (a handler that submits, a venue that answers synchronously) is journaled and
sent at once but published after them. Other venue messages that do not fit (unknown client order
id, illegal transition, non-integer quantity or price) are logged, counted in `counters` and
change nothing.
"""

from __future__ import annotations

import operator
from collections import defaultdict, deque
from decimal import Decimal

import msgspec
import structlog

from ..bus import Bus
from ..clock import Clock
from ..events import (Fill, OrderAccepted, OrderCancelled, OrderExpired, OrderFilled, OrderIntent,
                      OrderPartiallyFilled, OrderRejected, OrderSubmitted)
from ..ids import IdSource
from ..instruments import Instrument
from ..venue import CONNECTED, CancelRequest, ExecutionClient, OrderRequest
from .brackets import LEG_KINDS, Bracket, BracketsMixin
from .journal import Journal
from .positions import PositionBook
from .reconcile import ReconcileMixin
from .state import IllegalTransition, InvalidFill, Order, OrderState, Trigger, validate

log = structlog.get_logger("himari.orders")

__all__ = ["OrderManager", "LEG_KINDS"]

DEFAULT_ACK_TIMEOUT_NS = 5_000_000_000
_PAST_ACK = frozenset({OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELLED,
                       OrderState.EXPIRED})  # an ack arriving now is stale news, not a conflict


def _as_int(order_id: str, value: int) -> int:
    """A venue's integer (numpy ints included) as a Python int; anything else (a float price,
    a bool) is refused: ticks and lots are exact integers."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise InvalidFill(order_id, value) from None


class OrderManager(BracketsMixin, ReconcileMixin):
    def __init__(self, bus: Bus, clock: Clock, ids: IdSource, instruments: dict[str, Instrument],
                 venue: ExecutionClient, journal: Journal | None = None, *,
                 ack_timeout_ns: int = DEFAULT_ACK_TIMEOUT_NS) -> None:
        self._bus, self._clock, self._ids = bus, clock, ids
        self._instruments = instruments
        self._venue = venue
        self._journal = journal
        self.ack_timeout_ns = ack_timeout_ns
        self.positions = PositionBook(instruments)
        self.counters: dict[str, int] = defaultdict(int)
        self.orders: dict[str, Order] = {}
        self.connected = True
        self._by_client: dict[str, Order] = {}
        self._exec_ids: set[str] = set()  # venue execution ids booked (a duplicate is ignored)
        # booked from a status report (REST) before the stream's own message for it arrived:
        # that one stream copy is the expected race, not a venue duplicate
        self._exec_by_report: set[str] = set()
        self._brackets: dict[str, Bracket] = {}  # entry order id -> bracket
        self._live_brackets: dict[str, dict[str, Bracket]] = {}  # instrument -> not yet over
        self._fills_since_ns = 0  # reconciliation asks the venue for fills from here on
        self._outbox: deque[msgspec.Struct] = deque()
        self._draining = False
        venue.set_listener(self)

    # ------------------------------------------------------------------ commands

    def submit(self, intent: OrderIntent, quantity: int, stop_loss: int | None = None,
               take_profit: int | None = None) -> Order:
        """Create, journal, publish and send an order for `quantity` lots of `intent`. An order
        that fails validation is rejected locally (OrderRejected, no OrderSubmitted)."""
        order = Order(
            order_id=self._ids.next("O"), client_order_id=self._ids.next("C"),
            instrument_id=intent.instrument_id, side=intent.side, quantity=quantity,
            order_type=intent.order_type, price=intent.price,
            time_in_force=intent.time_in_force, ts_init=self._clock.now_ns(),
            decision_id=intent.decision_id, intent_id=intent.event_id,
            strategy_id=intent.strategy_id, reduce_only=intent.reduce_only,
            stop_loss=stop_loss, take_profit=take_profit)
        if stop_loss is not None or take_profit is not None:
            self._add_bracket(order)
        self._send(order, validate(order, self._instruments), intent)
        return order

    def cancel(self, order_id: str, reason: str = "requested") -> bool:
        """Ask the venue to cancel a working order. False when there is nothing to cancel (unknown,
        terminal, or already being cancelled). Cancelling a bracket leg stops that kind of leg
        from being re-placed."""
        order = self.orders.get(order_id)
        if order is None or order.is_terminal:
            return False
        if order.role != "entry":
            bracket = self._brackets.get(order.parent_order_id)
            if bracket is not None:
                bracket.disabled.add(order.role)
        return self._request_cancel(order, reason)

    def cancel_all(self, instrument_id: str | None = None, reason: str = "cancel_all") -> int:
        """Cancel every working order (bracket legs included); returns how many were asked."""
        return sum(1 for o in self.open_orders(instrument_id) if self.cancel(o.order_id, reason))

    def mark(self, instrument_id: str, price_ticks: int) -> None:
        """Mark the position to a price for unrealized PnL."""
        self.positions.mark(instrument_id, price_ticks)

    # ------------------------------------------------------------------ queries

    def position(self, instrument_id: str) -> int:
        return self.positions.quantity(instrument_id)

    def open_orders(self, instrument_id: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if not o.is_terminal
                and (instrument_id is None or o.instrument_id == instrument_id)]

    def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    def by_client_order_id(self, client_order_id: str) -> Order | None:
        return self._by_client.get(client_order_id)

    def knows_exec_id(self, exec_id: str) -> bool:
        return exec_id in self._exec_ids

    def stats(self) -> dict[str, int]:
        """Counters for the report (lifecycle, refusals, bracket legs) and open orders now."""
        return {**dict(sorted(self.counters.items())), "open_orders": len(self.open_orders())}

    # ------------------------------------------------------------------ venue callbacks

    def on_accepted(self, client_order_id: str, venue_order_id: str, ts_ns: int) -> None:
        order = self._lookup(client_order_id, "accepted")
        if order is not None and order.state in _PAST_ACK:  # overtaken by its fill or cancel
            order.venue_order_id = order.venue_order_id or venue_order_id
            self.counters["late_acks"] += 1
            return
        if order is None or not self._transition(order, Trigger.ACCEPT, ts_ns):
            return
        order.venue_order_id = venue_order_id
        self._emit(OrderAccepted(event_id=self._ids.next("E"), ts_ns=ts_ns, **self._keys(order),
                                 venue_order_id=venue_order_id))

    def on_rejected(self, client_order_id: str, reason: str, ts_ns: int) -> None:
        order = self._lookup(client_order_id, "rejected")
        if order is not None:
            self._reject(order, reason, ts_ns)

    def on_cancelled(self, client_order_id: str, reason: str, ts_ns: int) -> None:
        order = self._lookup(client_order_id, "cancelled")
        if order is None or not self._transition(order, Trigger.CANCEL, ts_ns):
            return
        order.reason = reason
        self._emit(OrderCancelled(event_id=self._ids.next("E"), ts_ns=ts_ns, **self._keys(order),
                                  reason=reason))
        self._leg_ended(order, asked=order.cancel_requested_ns is not None)

    def on_expired(self, client_order_id: str, reason: str, ts_ns: int) -> None:
        order = self._lookup(client_order_id, "expired")
        if order is None or not self._transition(order, Trigger.EXPIRE, ts_ns):
            return
        order.reason = reason
        self._emit(OrderExpired(event_id=self._ids.next("E"), ts_ns=ts_ns, **self._keys(order),
                                reason=reason))
        self._leg_ended(order, asked=False)

    def on_connection(self, state: str, ts_ns: int) -> None:
        """The client's link came up or went down. After a reconnect the owner must run
        `reconcile`: outcomes may have been missed while it was down."""
        self.connected = state == CONNECTED
        self.counters[f"connection_{state}"] += 1
        log.warning("execution_connection", state=state, ts_ns=ts_ns)

    def on_fill(self, client_order_id: str, exec_id: str, quantity: int, price: int,
                fee: Decimal, liquidity: str, ts_ns: int, *, instrument_id: str = "",
                side: int = 0) -> None:
        """One execution, identified by the venue's `exec_id` (booked once). `instrument_id` and
        `side` are needed only to book a fill for an order this manager does not know."""
        if exec_id and exec_id in self._exec_by_report:
            self._exec_by_report.discard(exec_id)  # a further copy is a duplicate again
            self.counters["fills_reported_before_streamed"] += 1
            log.info("fill_reported_before_streamed", exec_id=exec_id,
                     client_order_id=client_order_id)
            return
        if exec_id and exec_id in self._exec_ids:
            self.counters["duplicate_fills"] += 1
            log.warning("duplicate_fill", exec_id=exec_id, client_order_id=client_order_id)
            self._discrepancy("duplicate_fill", ts_ns, instrument_id, client_order_id, exec_id,
                              0, "execution id already booked: ignored")
            return
        order = self._by_client.get(client_order_id)
        fee = fee if isinstance(fee, Decimal) else Decimal(str(fee))
        try:
            oid = order.order_id if order is not None else client_order_id
            quantity, price = _as_int(oid, quantity), _as_int(oid, price)
            if quantity <= 0:
                raise InvalidFill(oid, quantity)
        except InvalidFill as exc:
            self.counters["invalid_fills"] += 1
            log.error("fill_refused", error=str(exc), client_order_id=client_order_id,
                      exec_id=exec_id, quantity=quantity, price=price)
            return
        if order is None:
            self._external_fill(client_order_id, exec_id, quantity, price, fee, liquidity, ts_ns,
                                instrument_id, side)
            return
        kind, detail = "", ""
        order_event: OrderFilled | OrderPartiallyFilled | None = None
        fill_id = self._ids.next("F")
        if order.is_terminal:
            expected = order.filled + quantity <= order.venue_filled  # a report announced it
            if not expected:
                kind = "overfill" if order.state is OrderState.FILLED else "late_fill"
                detail = f"fill of {quantity} lots after the order was {order.state}"
            order.book_late_fill(quantity, price, fee)
        else:
            if quantity > order.leaves:
                kind = "overfill"
                detail = f"fill of {quantity} lots exceeds leaves {order.leaves}"
            order.apply_fill(quantity, price, fee, ts_ns, allow_overfill=True)
            order_event = self._fill_event(order, fill_id, ts_ns)
        if exec_id:
            self._exec_ids.add(exec_id)
        else:
            self.counters["fills_without_exec_id"] += 1
        fill = Fill(event_id=self._ids.next("E"), ts_ns=ts_ns, fill_id=fill_id,
                    **self._keys(order), side=order.side, quantity=quantity, price=price, fee=fee,
                    liquidity=liquidity, decision_id=order.decision_id, exec_id=exec_id)
        self._book(order_event, fill)
        if order_event is not None:
            self.counters[str(order.state)] += 1
        if kind:
            self.counters[kind + "s"] += 1
            log.error(kind, order_id=order.order_id, client_order_id=client_order_id,
                      exec_id=exec_id, quantity=quantity, detail=detail)
            self._discrepancy(kind, ts_ns, order.instrument_id, client_order_id, exec_id,
                              order.side * quantity, detail)
        self._brackets_after_fill(order, order.instrument_id)

    # ------------------------------------------------------------------ internals

    def _fill_event(self, order: Order, fill_id: str,
                    ts_ns: int) -> OrderFilled | OrderPartiallyFilled:
        keys = self._keys(order)
        if order.state is OrderState.FILLED:
            return OrderFilled(event_id=self._ids.next("E"), ts_ns=ts_ns, **keys,
                               fill_id=fill_id, filled_quantity=order.filled)
        return OrderPartiallyFilled(event_id=self._ids.next("E"), ts_ns=ts_ns, **keys,
                                    fill_id=fill_id, filled_quantity=order.filled,
                                    leaves_quantity=order.leaves)

    def _book(self, order_event: OrderFilled | OrderPartiallyFilled | None, fill: Fill) -> None:
        """Journal, book to the position and publish one fill (with its order event)."""
        records = (fill,) if order_event is None else (order_event, fill)
        self._record(*records)
        self.counters["fills"] += 1
        self.positions.apply_fill(fill.instrument_id, fill.side, fill.quantity, fill.price,
                                  fill.fee, fill.ts_ns)
        update = self.positions.update_event(fill.instrument_id, self._ids.next("E"), fill.ts_ns,
                                             fill.fill_id)
        self._publish(*records, update)

    def _send(self, order: Order, problem: str = "", intent: OrderIntent | None = None) -> None:
        """Journal (the intent first, when the order comes from one), publish, send."""
        self.orders[order.order_id] = order
        self._by_client[order.client_order_id] = order
        ts = order.ts_init
        if problem:
            if intent is not None:
                self._record(intent)
            self.counters["local_rejects"] += 1
            self._reject(order, f"invalid: {problem}", ts)
            return
        order.apply(Trigger.SUBMIT, ts)
        submitted = OrderSubmitted(
            event_id=self._ids.next("E"), ts_ns=ts, **self._keys(order), side=order.side,
            quantity=order.quantity, order_type=order.order_type, price=order.price,
            decision_id=order.decision_id, intent_id=order.intent_id,
            parent_order_id=order.parent_order_id)
        request = OrderRequest(
            client_order_id=order.client_order_id, instrument_id=order.instrument_id,
            side=order.side, quantity=order.quantity, order_type=order.order_type,
            price=order.price, time_in_force=order.time_in_force, ts_ns=ts,
            reduce_only=order.reduce_only)
        # one write for the action: the intent, the order, the request, all before the send
        self._record(*((intent, submitted, request) if intent is not None else (submitted, request)))
        self.counters["submitted"] += 1
        self._publish(submitted)
        try:
            self._venue.submit(request)
        except Exception as exc:  # a venue that throws must not leave a phantom working order
            self.counters["venue_errors"] += 1
            log.exception("venue_submit_failed", order_id=order.order_id)
            if order.state is OrderState.SUBMITTED:
                self._reject(order, f"venue_error: {exc}", self._clock.now_ns())

    def _request_cancel(self, order: Order, reason: str) -> bool:
        if order.is_terminal or order.cancel_requested_ns is not None:
            return False
        ts = self._clock.now_ns()
        order.cancel_requested_ns = ts
        self._record(CancelRequest(ts_ns=ts, order_id=order.order_id,
                                   client_order_id=order.client_order_id, reason=reason))
        self.counters["cancel_requests"] += 1
        try:
            self._venue.cancel(order.client_order_id, ts)
        except Exception:
            self.counters["venue_errors"] += 1
            log.exception("venue_cancel_failed", order_id=order.order_id)
            if not order.is_terminal:
                order.cancel_requested_ns = None
            return False
        return True

    def _reject(self, order: Order, reason: str, ts_ns: int) -> None:
        if not self._transition(order, Trigger.REJECT, ts_ns):
            return
        order.reason = reason
        log.warning("order_rejected", order_id=order.order_id, reason=reason)
        self._emit(OrderRejected(event_id=self._ids.next("E"), ts_ns=ts_ns, **self._keys(order),
                                 reason=reason))
        self._leg_ended(order, asked=False)

    def _lookup(self, client_order_id: str, what: str) -> Order | None:
        order = self._by_client.get(client_order_id)
        if order is None:
            self.counters["unknown_orders"] += 1
            log.error("unknown_client_order_id", client_order_id=client_order_id, callback=what)
        return order

    def _transition(self, order: Order, trigger: Trigger, ts_ns: int) -> bool:
        try:
            order.apply(trigger, ts_ns)
        except IllegalTransition as exc:
            self.counters["illegal_transitions"] += 1
            log.error("illegal_transition", error=str(exc), order_id=order.order_id,
                      state=str(exc.state), trigger=str(trigger))
            return False
        self.counters[str(order.state)] += 1
        return True

    def _emit(self, event: msgspec.Struct) -> None:
        self._record(event)
        self._publish(event)

    def _publish(self, *events: msgspec.Struct) -> None:
        """Publish in causal order: events raised while ours are being dispatched (a handler
        that submits, a venue answering synchronously) wait until those are delivered."""
        self._outbox.extend(events)
        if self._draining:
            return
        self._draining = True
        try:
            while self._outbox:
                self._bus.publish(self._outbox.popleft())
        finally:
            self._draining = False

    def _record(self, *records: msgspec.Struct) -> None:
        if self._journal is not None:
            self._journal.write_many(records)

    @staticmethod
    def _keys(order: Order) -> dict[str, str]:
        return {"order_id": order.order_id, "client_order_id": order.client_order_id,
                "instrument_id": order.instrument_id}
