"""The order manager: one state machine per order, positions, and one-cancels-other brackets.

It is the venue's `VenueListener` and reaches a venue only through a `VenueClient`. Everything is
synchronous; a venue may call back from inside `submit` / `cancel` (an immediate reject, fill or
cancel confirmation) or later, and both work: an order is registered and SUBMITTED before it is
sent, and bracket resizing tolerates being re-entered.

Durability (write-ahead): with a journal, a submission (OrderSubmitted + the OrderRequest), a
cancel request, every order event and every Fill are written before they are published or sent.

Per fill the bus sees, in order: OrderPartiallyFilled | OrderFilled (`filled_quantity` is the
order's cumulative filled lots; the Fill carries this execution's lots), then the Fill, then the
PositionUpdate, and those three are contiguous: an event the manager raises while its own events
are being dispatched (a handler that submits, a venue that answers synchronously) is journaled and
sent at once but published after them. Venue messages that do not fit (unknown client order id,
illegal transition, overfill, non-integer quantity or price) are logged, counted in `counters`
and change nothing.

Brackets. An entry that carries stop_loss and/or take_profit gets protective legs, opposite side
and reduce_only: a stop order at stop_loss and a limit order at take_profit. The legs of each kind
always cover `target = entry.filled - lots exited by legs`:
- entry fills (partially or fully): each kind grows by one extra leg for the uncovered lots, so a
  partially filled entry is protected fill by fill and no working leg is ever cancelled to grow;
- a leg fills: the other kind now covers more than the target, so its working legs are cancelled
  and, once the venue confirms the cancels, one leg for the new target is placed (cancel, then
  replace: the legs never cover more than the position except during that cancel round trip).
  A complete fill makes the target 0, so the other kind is just cancelled (one-cancels-other);
- a leg fill also cancels the entry's unfilled remainder: the trade is over once it is exited;
- cancelling the entry cancels only its working remainder: legs protecting filled lots stay;
- a leg the venue rejects, expires or cancels unasked, or that the caller cancels, disables
  that kind for the bracket (logged and counted) rather than being re-placed in a loop.
"""

from __future__ import annotations

import operator
from collections import defaultdict, deque
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import structlog

from ..bus import Bus
from ..clock import Clock
from ..events import (Fill, OrderAccepted, OrderCancelled, OrderExpired, OrderFilled, OrderIntent,
                      OrderPartiallyFilled, OrderRejected, OrderSubmitted)
from ..ids import IdSource
from ..instruments import Instrument
from ..venue import OrderRequest, VenueClient
from .journal import Journal
from .positions import PositionBook
from .state import IllegalTransition, InvalidFill, Order, OrderState, Overfill, Trigger, validate

log = structlog.get_logger("himari.orders")

LEG_KINDS = (("stop_loss", "stop"), ("take_profit", "limit"))  # (role, order type)


@dataclass(slots=True)
class _Bracket:
    entry: Order
    legs: list[Order] = field(default_factory=list)
    disabled: set[str] = field(default_factory=set)  # leg roles no longer placed
    busy: bool = False
    dirty: bool = False


def _as_int(order: Order, value: int) -> int:
    """A venue's integer (numpy ints included) as a Python int; anything else (a float price,
    a bool) is refused: ticks and lots are exact integers."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise InvalidFill(order.order_id, value) from None


class OrderManager:
    def __init__(self, bus: Bus, clock: Clock, ids: IdSource, instruments: dict[str, Instrument],
                 venue: VenueClient, journal: Journal | None = None) -> None:
        self._bus, self._clock, self._ids = bus, clock, ids
        self._instruments = instruments
        self._venue = venue
        self._journal = journal
        self.positions = PositionBook(instruments)
        self.counters: dict[str, int] = defaultdict(int)
        self.orders: dict[str, Order] = {}
        self._by_client: dict[str, Order] = {}
        self._brackets: dict[str, _Bracket] = {}  # entry order id -> bracket
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
            self._brackets[order.order_id] = _Bracket(order)
        self._send(order, validate(order, self._instruments))
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

    def stats(self) -> dict[str, int]:
        """Counters for the report (lifecycle, refusals, bracket legs) and open orders now."""
        return {**dict(sorted(self.counters.items())), "open_orders": len(self.open_orders())}

    def legs(self, entry_order_id: str) -> list[Order]:
        bracket = self._brackets.get(entry_order_id)
        return list(bracket.legs) if bracket else []

    # ------------------------------------------------------------------ venue callbacks

    def on_accepted(self, client_order_id: str, venue_order_id: str, ts_ns: int) -> None:
        order = self._lookup(client_order_id, "accepted")
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

    def on_fill(self, client_order_id: str, quantity: int, price: int, fee: Decimal,
                liquidity: str, ts_ns: int) -> None:
        order = self._lookup(client_order_id, "fill")
        if order is None:
            return
        fee = fee if isinstance(fee, Decimal) else Decimal(str(fee))
        try:
            quantity, price = _as_int(order, quantity), _as_int(order, price)
            order.apply_fill(quantity, price, fee, ts_ns)
        except (IllegalTransition, Overfill, InvalidFill) as exc:
            kind = {IllegalTransition: "illegal_transitions", Overfill: "overfills",
                    InvalidFill: "invalid_fills"}[type(exc)]
            self.counters[kind] += 1
            log.error("fill_refused", error=str(exc), order_id=order.order_id,
                      client_order_id=client_order_id, quantity=quantity, price=price)
            return
        fill_id = self._ids.next("F")
        keys = self._keys(order)
        order_event: OrderFilled | OrderPartiallyFilled
        if order.state is OrderState.FILLED:
            order_event = OrderFilled(event_id=self._ids.next("E"), ts_ns=ts_ns, **keys,
                                      fill_id=fill_id, filled_quantity=order.filled)
        else:
            order_event = OrderPartiallyFilled(
                event_id=self._ids.next("E"), ts_ns=ts_ns, **keys, fill_id=fill_id,
                filled_quantity=order.filled, leaves_quantity=order.leaves)
        fill = Fill(event_id=self._ids.next("E"), ts_ns=ts_ns, fill_id=fill_id, **keys,
                    side=order.side, quantity=quantity, price=price, fee=fee,
                    liquidity=liquidity, decision_id=order.decision_id)
        self._record(order_event, fill)
        self.counters["fills"] += 1
        self.counters[str(order.state)] += 1
        self.positions.apply_fill(order.instrument_id, order.side, quantity, price, fee, ts_ns)
        update = self.positions.update_event(order.instrument_id, self._ids.next("E"), ts_ns,
                                             fill_id)
        self._publish(order_event, fill, update)
        if order.role == "entry":
            if order.order_id in self._brackets:
                self._sync(self._brackets[order.order_id])
        else:
            bracket = self._brackets.get(order.parent_order_id)
            if bracket is not None:
                if not bracket.entry.is_terminal:
                    self._request_cancel(bracket.entry, "bracket_exited")
                self._sync(bracket)

    # ------------------------------------------------------------------ internals

    def _send(self, order: Order, problem: str = "") -> None:
        self.orders[order.order_id] = order
        self._by_client[order.client_order_id] = order
        ts = order.ts_init
        if problem:
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
        self._record(submitted, request)
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
        if self._journal is not None:
            self._journal.write_raw("CancelRequest", {
                "ts_ns": ts, "order_id": order.order_id,
                "client_order_id": order.client_order_id, "reason": reason})
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

    def _leg_ended(self, order: Order, asked: bool) -> None:
        """A terminal cancel / reject / expiry: let the bracket react."""
        if order.role == "entry":
            return  # legs protecting filled lots stay; an unfilled entry has no legs
        bracket = self._brackets.get(order.parent_order_id)
        if bracket is None:
            return
        if not asked and order.role not in bracket.disabled:
            bracket.disabled.add(order.role)
            self.counters["bracket_leg_failures"] += 1
            log.error("bracket_leg_failed", order_id=order.order_id, role=order.role,
                      entry_order_id=bracket.entry.order_id, state=str(order.state),
                      reason=order.reason)
        self._sync(bracket)

    def _sync(self, bracket: _Bracket) -> None:
        """Bring the legs to `target` lots per kind; re-entrant calls are folded into a rerun."""
        if bracket.busy:
            bracket.dirty = True
            return
        bracket.busy = True
        try:
            bracket.dirty = True
            while bracket.dirty:
                bracket.dirty = False
                self._sync_once(bracket)
        finally:
            bracket.busy = False

    def _sync_once(self, bracket: _Bracket) -> None:
        entry = bracket.entry
        target = max(0, entry.filled - sum(leg.filled for leg in bracket.legs))
        for role, order_type in LEG_KINDS:
            price = entry.stop_loss if role == "stop_loss" else entry.take_profit
            if price is None:
                continue
            live = [leg for leg in bracket.legs if leg.role == role and not leg.is_terminal]
            active = [leg for leg in live if leg.cancel_requested_ns is None]
            covered = sum(leg.leaves for leg in active)
            if covered > target:  # shrink: cancel now, replace after the venue confirms
                for leg in active:
                    self._request_cancel(leg, "bracket_resize" if target else "oco")
            elif covered < target and len(live) == len(active) and role not in bracket.disabled:
                self._place_leg(bracket, role, order_type, price, target - covered)

    def _place_leg(self, bracket: _Bracket, role: str, order_type: str, price: int,
                   quantity: int) -> None:
        entry = bracket.entry
        leg = Order(
            order_id=self._ids.next("O"), client_order_id=self._ids.next("C"),
            instrument_id=entry.instrument_id, side=-entry.side, quantity=quantity,
            order_type=order_type, price=price, time_in_force="gtc",
            ts_init=self._clock.now_ns(), decision_id=entry.decision_id,
            intent_id=entry.intent_id, strategy_id=entry.strategy_id, reduce_only=True,
            role=role, parent_order_id=entry.order_id)
        bracket.legs.append(leg)
        entry.leg_order_ids.append(leg.order_id)
        self.counters["bracket_legs"] += 1
        self._send(leg)

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
            for record in records:
                self._journal.write(record)

    @staticmethod
    def _keys(order: Order) -> dict[str, str]:
        return {"order_id": order.order_id, "client_order_id": order.client_order_id,
                "instrument_id": order.instrument_id}
