"""What every strategy shares: it sees only the bus and the clock, never a broker.

A strategy states a *target* position with `order_towards(target, source_id, reason=...)`; this
base turns it into market-order intents and follows them on the bus:
- one Decision per new target, tied to the bar/matrix it was made on; every intent it leads to
  carries that decision's id;
- a position on the wrong side of the target is closed first (a reduce-only intent) and the new
  side is opened only once the close has filled, so risk sees the true position for each order
  (a flip never passes as "reducing", and a halted kill switch lets the close through but not the
  new entry);
- while an intent is in flight nothing new is sent; an intent refused by risk, or an order
  rejected, cancelled or expired, drops the target: the strategy decides again on its next bar,
  never in a loop.
Position comes from `PositionUpdate` events only.

Lifecycle: the runner calls `on_start()` once before the first tick (it subscribes the strategy's
handlers; a subclass adds its own after `super().on_start()`) and `on_stop()` once at the end (the
default flattens). `subscriptions` lists the bar specs the strategy needs; the runner builds those
bars for the strategy's instrument. A strategy reads shared state only from the cache it is given
(positions, orders, last prices), never from an engine's internals.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from himari.daemon.bars import BarSpec, BarSpecError
from himari.daemon.bus import Bus
from himari.daemon.cache import Cache
from himari.daemon.clock import Clock
from himari.daemon.configbase import ConfigError
from himari.daemon.events import (Decision, OrderCancelled, OrderExpired, OrderFilled, OrderIntent,
                                  OrderRejected, OrderSubmitted, PositionUpdate, RiskVerdict)
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument, InstrumentError


def check_quantity_and_bar_spec(quantity: Decimal, bar_spec: str) -> None:
    """The checks every strategy's `quantity` / `bar_spec` params share (ConfigError, exit 2)."""
    if not quantity.is_finite() or quantity <= 0:
        raise ConfigError("strategy.params.quantity", str(quantity), "a positive number")
    try:
        BarSpec.parse(bar_spec)
    except BarSpecError as exc:
        raise ConfigError("strategy.params.bar_spec", bar_spec, str(exc)) from None


def quantity_lots(instrument: Instrument, quantity: Decimal) -> int:
    """`strategy.params.quantity` (instrument units) as whole lots, or ConfigError (exit 2)."""
    try:
        lots = instrument.qty_to_lots(quantity)
    except InstrumentError as exc:
        raise ConfigError("strategy.params.quantity", str(quantity), str(exc)) from None
    if lots <= 0:
        raise ConfigError("strategy.params.quantity", str(quantity), "at least one lot")
    return lots


class Strategy:
    def __init__(self, strategy_id: str, instrument_id: str, bus: Bus, clock: Clock,
                 ids: IdSource, cache: Cache | None = None) -> None:
        self.cache = cache
        self.strategy_id = strategy_id
        self.instrument_id = instrument_id
        self.bus = bus
        self.clock = clock
        self.ids = ids
        self.position = 0
        self._target: int | None = None
        self._decision_id = ""
        self._intent_fields: dict[str, Any] = {}
        self._in_flight: dict[str, int] = {}  # intent id -> signed lots not yet settled
        self._intent_of_order: dict[str, str] = {}
        self.decisions = 0
        self.intents = 0
        self.refused = 0

    @property
    def subscriptions(self) -> list[str]:
        """Bar specs this strategy needs for its instrument."""
        return []

    def on_start(self, order: int = 50) -> None:
        """Subscribe the handlers (hot path, `order` 50: after the portfolio and matrices)."""
        if self.cache is not None:  # a restarted daemon may already hold a position
            self.position = self.cache.position(self.instrument_id)
        sub = self.bus.subscribe
        name = self.strategy_id
        sub(PositionUpdate, self._on_position, name=f"{name}.position", order=order)
        sub(RiskVerdict, self._on_verdict, name=f"{name}.verdict", order=order)
        sub(OrderSubmitted, self._on_submitted, name=f"{name}.submitted", order=order)
        sub(OrderFilled, self._on_filled, name=f"{name}.order_done", order=order)
        for failed in (OrderCancelled, OrderRejected, OrderExpired):
            sub(failed, self._on_order_failed, name=f"{name}.order_done", order=order)

    def on_stop(self) -> None:
        """End of the session (end of data, SIGTERM): by default, go flat."""
        self.flatten("stop")

    @property
    def pending(self) -> int:
        return sum(self._in_flight.values())

    def order_towards(self, target: int, source_id: str, *, reason: str,
                      confidence: float = 1.0, **intent_fields: Any) -> None:
        """Aim for `target` lots; a no-op when that is already the aim or the position."""
        if target == self._target or (self._target is None and target == self.position
                                      and not self._in_flight):
            return
        decision = Decision(event_id=self.ids.next("D"), ts_ns=self.clock.now_ns(),
                            strategy_id=self.strategy_id, instrument_id=self.instrument_id,
                            source_id=source_id, target_position=target, confidence=confidence,
                            reason=reason)
        self.decisions += 1
        self._target = target
        self._decision_id = decision.event_id
        self._intent_fields = intent_fields
        self.bus.publish(decision)
        self._act()

    def flatten(self, source_id: str, reason: str = "strategy stop") -> None:
        self.order_towards(0, source_id, reason=reason)

    def _act(self) -> None:
        """Send the next intent towards the target, unless one is still in flight."""
        target = self._target
        if target is None or self._in_flight:
            return
        pos = self.position
        if pos == target:
            self._target = None  # reached
            return
        if pos != 0 and (target == 0 or (pos > 0) != (target > 0)):
            delta, reduce_only = -pos, True  # close first; open the other side once flat
        else:
            delta, reduce_only = target - pos, abs(target) < abs(pos)
        intent = OrderIntent(event_id=self.ids.next("I"), ts_ns=self.clock.now_ns(),
                             decision_id=self._decision_id, strategy_id=self.strategy_id,
                             instrument_id=self.instrument_id, side=1 if delta > 0 else -1,
                             quantity=abs(delta), reduce_only=reduce_only, **self._intent_fields)
        self._in_flight[intent.event_id] = delta
        self.intents += 1
        self.bus.publish(intent)

    # ---- bookkeeping from the bus

    def _on_position(self, ev: PositionUpdate) -> None:
        if ev.instrument_id == self.instrument_id:
            self.position = ev.quantity
            self._act()

    def _on_verdict(self, ev: RiskVerdict) -> None:
        if not ev.approved and ev.intent_id in self._in_flight:
            del self._in_flight[ev.intent_id]
            self.refused += 1
            self._target = None

    def _on_submitted(self, ev: OrderSubmitted) -> None:
        if ev.intent_id in self._in_flight:
            self._intent_of_order[ev.order_id] = ev.intent_id

    def _on_filled(self, ev: OrderFilled) -> None:
        # The PositionUpdate that follows this fill moves the strategy on.
        intent_id = self._intent_of_order.pop(ev.order_id, None)
        if intent_id is not None:
            self._in_flight.pop(intent_id, None)

    def _on_order_failed(self, ev: OrderCancelled | OrderRejected | OrderExpired) -> None:
        intent_id = self._intent_of_order.pop(ev.order_id, None)
        if intent_id is not None:
            self._in_flight.pop(intent_id, None)
            self._target = None
