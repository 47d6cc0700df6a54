"""Risk in the pipeline: a sized entry becomes a bracketed order at the venue; a refused intent
changes no order state; working orders count against the limits; exits pass a halted gate; the
gate routes several instruments through PortfolioRisk."""

from __future__ import annotations

from decimal import Decimal

import msgspec
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
from himari.daemon.risk.config import PortfolioRiskConfig, RiskConfig
from himari.daemon.risk.engine import RiskEngine
from himari.daemon.risk.portfolio import PortfolioRisk
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


def intent(qty: int, side: int = 1, **kw) -> OrderIntent:
    return OrderIntent(event_id=f"I{qty}", ts_ns=20 * MIN5, decision_id="D1", strategy_id="s",
                       instrument_id="X", side=side, quantity=qty, **kw)


def verdicts(seen: list) -> list[tuple[bool, str]]:
    return [(v.approved, v.rule) for v in seen if isinstance(v, RiskVerdict)]


def trade(venue: SimVenue, price: int, size: int, ts: int = 20 * MIN5 + 1,
          inst: str = "X") -> None:
    batch = TickBatch.from_trades(inst, np.array([ts]), np.array([price]), np.array([size]))
    k = venue.next_execution(batch, 0, 1)
    if k < 1:
        venue.execute_at(batch, k)


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


def test_resting_buy_limits_count_against_max_position():
    bus, clock, venue, om, risk, seen = wire(max_position=Decimal(5))
    for _ in range(3):
        bus.publish(intent(5, order_type="limit", price=9_990))
    assert verdicts(seen) == [(True, ""), (False, "max_position"), (False, "max_position")]
    assert venue.working_orders() == 1 and len(om.open_orders("X")) == 1


def test_working_tally_follows_fills_and_cancels():
    bus, clock, venue, om, risk, seen = wire(max_position=Decimal(5))
    bus.publish(intent(5, order_type="limit", price=9_990))
    trade(venue, 9_995, 1)  # the limit rests (a marketable one would fill whole, as taker)
    trade(venue, 9_989, 2)  # partial fill: position 2, 3 lots still working
    assert om.position("X") == 2
    bus.publish(intent(1, order_type="limit", price=9_990))  # worst case 6
    bus.publish(intent(2, side=-1))  # an exit passes
    assert verdicts(seen)[1:] == [(False, "max_position"), (True, "")]
    trade(venue, 10_000, 1, ts=20 * MIN5 + 2)  # the market sell fills: position 0, 3 working
    assert om.position("X") == 0
    bus.publish(intent(3, order_type="limit", price=9_980))  # 0 + 3 working + 3 > 5
    om.cancel_all("X")
    bus.publish(intent(4, order_type="limit", price=9_980))  # nothing working now
    assert verdicts(seen)[3:] == [(False, "max_position"), (True, "")]


def test_a_halted_gate_lets_a_flatten_larger_than_max_order_quantity_through():
    bus, clock, venue, om, risk, seen = wire(max_order_quantity=Decimal(5),
                                             max_position=Decimal(20))
    for _ in range(3):
        bus.publish(intent(4))
        trade(venue, 10_000, 10)
    assert om.position("X") == 12
    risk.halt("operator")
    bus.publish(intent(1))
    bus.publish(intent(12, side=-1, reduce_only=True))
    assert verdicts(seen)[3:] == [(False, "kill_switch"), (True, "")]
    trade(venue, 10_000, 10, ts=20 * MIN5 + 5)
    assert om.position("X") == 0


def test_recovered_open_orders_are_counted_after_resync():
    bus, clock, venue, om, risk, seen = wire(max_position=Decimal(5))
    # an order placed around the gate (as a recovery would leave it) is picked up by resync
    om.submit(intent(4, order_type="limit", price=9_990), 4)
    gate = RiskGate(bus, risk, om, StageTimer(capacity=8))
    gate.resync_working()
    assert gate.working_lots("X") == (4, 0)
    assert gate.exposure("X") == (0, 4, 0)


Y = Instrument(id="Y", tick_size=Decimal("0.01"), multiplier=Decimal(10))


def test_gate_routes_instruments_and_applies_portfolio_gross_notional():
    bus, clock, ids = Bus(), ReplayClock(), IdSource()
    insts = {"X": INST, "Y": Y}
    venue = SimVenue(SimVenueConfig(taker_fee_bps=Decimal(0)), insts)
    om = OrderManager(bus, clock, ids, insts, venue)
    # 1 lot of X at 100.00 = 100; 1 lot of Y at 50.00 = 500; gross limit 2,000
    cfg = RiskConfig(max_position=Decimal(100), max_order_quantity=Decimal(100),
                     instruments={"Y": {"max_position": "3"}},
                     portfolio=PortfolioRiskConfig(max_gross_notional=Decimal(2000)))
    risk = PortfolioRisk(cfg, insts.values(), ids)
    risk.warmup()
    RiskGate(bus, risk, om, StageTimer(capacity=64)).attach()
    seen: list = []
    bus.subscribe(RiskVerdict, seen.append, name="t.v")
    risk.on_last_tick("X", 10_000, 20 * MIN5)
    risk.on_last_tick("Y", 5_000, 20 * MIN5)
    clock.advance_to(20 * MIN5)
    bus.publish(intent(10, order_type="limit", price=9_990))  # X worst case 999 (limit price)
    y = OrderIntent(event_id="IY", ts_ns=20 * MIN5, decision_id="D2", strategy_id="s",
                    instrument_id="Y", side=1, quantity=4)
    bus.publish(y)  # Y's own max_position is 3
    bus.publish(msgspec.structs.replace(y, quantity=3))  # 1,000 (X at last) + 1,500 > 2,000
    bus.publish(msgspec.structs.replace(y, quantity=2))  # 1,000 + 1,000: at the limit
    assert verdicts(seen) == [(True, ""), (False, "max_position"), (False, "portfolio_notional"),
                              (True, "")]
    v = [e for e in seen if isinstance(e, RiskVerdict)][2]
    assert v.values == {"value": 2500.0, "limit": 2000.0}
