"""Risk in the pipeline: a sized entry becomes a bracketed order at the venue; a refused intent
changes no order state."""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from himari.brokers.sim.config import SimVenueConfig
from himari.brokers.sim.venue import SimVenue
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.events import (Bar, Fill, OrderIntent, OrderSubmitted, RiskVerdict, TickBatch)
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.orders.manager import OrderManager
from himari.daemon.pipeline import RiskGate
from himari.daemon.risk.config import RiskConfig
from himari.daemon.risk.engine import RiskEngine
from himari.daemon.stagetimer import StageTimer

INST = Instrument(id="X", tick_size=Decimal("0.01"))
MIN5 = 300 * 10**9


def wire(**risk_cfg):
    bus, clock, ids = Bus(), ReplayClock(), IdSource()
    venue = SimVenue(SimVenueConfig(taker_fee_bps=Decimal(0)), {"X": INST})
    om = OrderManager(bus, clock, ids, {"X": INST}, venue)
    risk = RiskEngine(RiskConfig(**risk_cfg), INST, ids)
    risk.warmup()
    RiskGate(bus, risk, om, StageTimer(capacity=64)).attach()
    seen: list = []
    for t in (RiskVerdict, OrderSubmitted, Fill):
        bus.subscribe(t, seen.append, name=f"t.{t.__name__}")
    # 20 five-minute bars with a 40-tick range warm the ATR(14) up to 40 ticks
    for i in range(20):
        risk.on_bar(Bar(event_id=f"B{i}", ts_ns=(i + 1) * MIN5, instrument_id="X", spec="5m",
                        ts_open=i * MIN5, ts_close=(i + 1) * MIN5, open=10_000, high=10_020,
                        low=9_980, close=10_000, volume=10, n_ticks=10))
    risk.on_trade_price(10_000, 20 * MIN5)
    risk.on_equity(Decimal("100000"), 20 * MIN5)
    clock.advance_to(20 * MIN5)
    return bus, clock, venue, om, risk, seen


def intent(qty: int, side: int = 1) -> OrderIntent:
    return OrderIntent(event_id=f"I{qty}", ts_ns=20 * MIN5, decision_id="D1", strategy_id="s",
                       instrument_id="X", side=side, quantity=qty)


def test_sized_entry_is_bracketed_at_the_venue():
    bus, clock, venue, om, risk, seen = wire(max_order_quantity=Decimal(5))
    bus.publish(intent(0))
    verdict = next(e for e in seen if isinstance(e, RiskVerdict))
    assert verdict.approved and 1 <= verdict.quantity <= 5
    assert verdict.stop_loss < 10_000 < verdict.take_profit
    # one step of ATR(14) = 40 ticks: stop 1.5 ATR below, target 3 ATR above
    assert (verdict.stop_loss, verdict.take_profit) == (10_000 - 60, 10_000 + 120)
    batch = TickBatch.from_trades("X", np.array([20 * MIN5 + 1]), np.array([10_000]),
                                  np.array([100]))
    venue.execute_at(batch, venue.next_execution(batch, 0, 1))
    submitted = [e for e in seen if isinstance(e, OrderSubmitted)]
    assert [(s.order_type, s.side, s.price) for s in submitted] == [
        ("market", 1, None), ("stop", -1, 9_940), ("limit", -1, 10_120)]
    assert om.position("X") == verdict.quantity
    assert venue.working_orders() == 2


def test_refused_intent_changes_no_order_state():
    bus, clock, venue, om, risk, seen = wire(max_order_quantity=Decimal(5))
    bus.publish(intent(6))
    verdict = next(e for e in seen if isinstance(e, RiskVerdict))
    assert not verdict.approved and verdict.rule == "max_order_qty"
    assert verdict.values == {"value": 6.0, "limit": 5.0}
    assert "max_order_quantity" in verdict.reason
    assert not om.open_orders() and om.position("X") == 0 and venue.working_orders() == 0
    assert not any(isinstance(e, OrderSubmitted) for e in seen)
