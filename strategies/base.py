"""What every strategy shares: it sees only the bus and the clock, never a broker.

`Strategy` tracks its own net position from `PositionUpdate` events and the quantity still in
flight (intents not yet filled, cancelled or refused), so it never double-sends while an order is on
its way. Subclasses call `order_towards(target, source_id, ...)` and implement their handlers.
"""

from __future__ import annotations

from typing import Any

from himari.daemon.bus import Bus
from himari.daemon.clock import Clock
from himari.daemon.events import (Decision, OrderCancelled, OrderExpired, OrderFilled, OrderIntent,
                                  OrderRejected, OrderSubmitted, PositionUpdate, RiskVerdict)
from himari.daemon.ids import IdSource


class Strategy:
    def __init__(self, strategy_id: str, instrument_id: str, bus: Bus, clock: Clock,
                 ids: IdSource) -> None:
        self.strategy_id = strategy_id
        self.instrument_id = instrument_id
        self.bus = bus
        self.clock = clock
        self.ids = ids
        self.position = 0
        self._in_flight: dict[str, int] = {}  # intent id -> signed lots not yet settled
        self._intent_of_order: dict[str, str] = {}
        self.decisions = 0
        self.intents = 0
        self.refused = 0

    def attach(self, order: int = 50) -> None:
        sub = self.bus.subscribe
        name = self.strategy_id
        sub(PositionUpdate, self._on_position, name=f"{name}.position", order=order)
        sub(RiskVerdict, self._on_verdict, name=f"{name}.verdict", order=order)
        sub(OrderSubmitted, self._on_submitted, name=f"{name}.submitted", order=order)
        for done in (OrderFilled, OrderCancelled, OrderRejected, OrderExpired):
            sub(done, self._on_order_done, name=f"{name}.order_done", order=order)

    @property
    def pending(self) -> int:
        return sum(self._in_flight.values())

    def order_towards(self, target: int, source_id: str, *, reason: str,
                      confidence: float = 1.0, **intent_fields: Any) -> None:
        """Publish a decision and the market order that moves position + in-flight to `target`."""
        delta = target - self.position - self.pending
        if delta == 0:
            return
        now = self.clock.now_ns()
        decision = Decision(event_id=self.ids.next("D"), ts_ns=now, strategy_id=self.strategy_id,
                            instrument_id=self.instrument_id, source_id=source_id,
                            target_position=target, confidence=confidence, reason=reason)
        self.decisions += 1
        self.bus.publish(decision)
        intent = OrderIntent(event_id=self.ids.next("I"), ts_ns=now, decision_id=decision.event_id,
                             strategy_id=self.strategy_id, instrument_id=self.instrument_id,
                             side=1 if delta > 0 else -1, quantity=abs(delta), **intent_fields)
        self._in_flight[intent.event_id] = delta
        self.intents += 1
        self.bus.publish(intent)

    def flatten(self, source_id: str, reason: str = "strategy stop") -> None:
        self.order_towards(0, source_id, reason=reason)

    # ---- bookkeeping from the bus

    def _on_position(self, ev: PositionUpdate) -> None:
        if ev.instrument_id == self.instrument_id:
            self.position = ev.quantity

    def _on_verdict(self, ev: RiskVerdict) -> None:
        if not ev.approved and ev.intent_id in self._in_flight:
            del self._in_flight[ev.intent_id]
            self.refused += 1

    def _on_submitted(self, ev: OrderSubmitted) -> None:
        if ev.intent_id in self._in_flight:
            self._intent_of_order[ev.order_id] = ev.intent_id

    def _on_order_done(self, ev: OrderFilled | OrderCancelled | OrderRejected | OrderExpired) -> None:
        intent_id = self._intent_of_order.pop(ev.order_id, None)
        if intent_id is not None:
            self._in_flight.pop(intent_id, None)
