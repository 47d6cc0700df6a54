"""The strategy base: targets become intents, flips close first, refusals never loop."""

from __future__ import annotations

from decimal import Decimal

from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.events import (Decision, OrderFilled, OrderIntent, OrderSubmitted,
                                  PositionUpdate, RiskVerdict)
from himari.daemon.ids import IdSource
from himari.strategies.base import Strategy


class Desk:
    """Stands in for risk, the order manager and the venue: approves (or refuses) intents and,
    when told to, fills them and reports the new position."""

    def __init__(self, bus: Bus, approve=lambda intent: True) -> None:
        self.bus = bus
        self.approve = approve
        self.position = 0
        self.working: list[tuple[str, OrderIntent]] = []
        self.intents: list[OrderIntent] = []
        bus.subscribe(OrderIntent, self.on_intent, name="desk")

    def on_intent(self, intent: OrderIntent) -> None:
        self.intents.append(intent)
        ok = self.approve(intent)
        self.bus.publish(RiskVerdict(event_id=f"V{len(self.intents)}", ts_ns=0,
                                     intent_id=intent.event_id, decision_id=intent.decision_id,
                                     approved=ok, quantity=intent.quantity if ok else 0,
                                     rule="" if ok else "kill_switch"))
        if ok:
            oid = f"O{len(self.intents)}"
            self.bus.publish(OrderSubmitted(event_id=f"S{oid}", ts_ns=0, order_id=oid,
                                            client_order_id=oid, instrument_id="X",
                                            side=intent.side, quantity=intent.quantity,
                                            order_type="market", intent_id=intent.event_id))
            self.working.append((oid, intent))

    def fill_all(self) -> None:
        while self.working:
            oid, intent = self.working.pop(0)
            self.position += intent.side * intent.quantity
            self.bus.publish(OrderFilled(event_id=f"F{oid}", ts_ns=0, order_id=oid,
                                         client_order_id=oid, instrument_id="X", fill_id=oid,
                                         filled_quantity=intent.quantity))
            self.bus.publish(PositionUpdate(event_id=f"P{oid}", ts_ns=0, instrument_id="X",
                                            quantity=self.position, avg_price=Decimal(0),
                                            realized_pnl=Decimal(0), unrealized_pnl=Decimal(0),
                                            fees=Decimal(0)))


def make(approve=lambda intent: True) -> tuple[Strategy, Desk, list[Decision]]:
    bus = Bus()
    strategy = Strategy("s", "X", bus, ReplayClock(), IdSource())
    strategy.on_start()
    desk = Desk(bus, approve)
    decisions: list[Decision] = []
    bus.subscribe(Decision, decisions.append, name="t")
    return strategy, desk, decisions


def test_flip_closes_first_then_opens_once_flat():
    strategy, desk, decisions = make()
    strategy.order_towards(2, "B1", reason="up")
    desk.fill_all()
    assert strategy.position == 2
    strategy.order_towards(-3, "B2", reason="down")
    assert [(i.side, i.quantity, i.reduce_only) for i in desk.intents[1:]] == [(-1, 2, True)]
    desk.fill_all()  # the close fills; the entry goes out on the position update
    assert [(i.side, i.quantity, i.reduce_only) for i in desk.intents[2:]] == [(-1, 3, False)]
    desk.fill_all()
    assert strategy.position == -3
    assert [d.target_position for d in decisions] == [2, -3]
    assert {i.decision_id for i in desk.intents[1:]} == {decisions[1].event_id}


def test_nothing_new_while_in_flight_and_same_target_is_not_resent():
    strategy, desk, decisions = make()
    strategy.order_towards(1, "B1", reason="up")
    strategy.order_towards(1, "B2", reason="up")
    assert len(desk.intents) == 1 and len(decisions) == 1
    desk.fill_all()
    strategy.order_towards(1, "B3", reason="up")
    assert len(desk.intents) == 1


def test_a_refused_entry_drops_the_target_without_retrying_in_a_loop():
    # Risk lets reducing orders through (a halted kill switch) but refuses entries.
    strategy, desk, _ = make()
    strategy.order_towards(1, "B1", reason="up")
    desk.fill_all()
    desk.approve = lambda intent: intent.reduce_only
    strategy.order_towards(-1, "B2", reason="down")
    desk.fill_all()  # the close passes and fills; the entry is refused once
    assert strategy.position == 0
    assert [(i.side, i.reduce_only) for i in desk.intents] == [(1, False), (-1, True), (-1, False)]
    assert strategy.refused == 1 and strategy.pending == 0
    strategy.order_towards(-1, "B3", reason="down")  # the next bar decides again
    assert len(desk.intents) == 4
