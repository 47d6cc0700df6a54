"""The risk gate: every order intent passes risk before the order manager sees it.

On `OrderIntent` it asks the risk engine for a verdict, publishes the verdict (approved or not, so
the strategy and the records see it), and hands an approved intent to the order manager with the
approved quantity and bracket. A rejected intent goes no further and changes no order state.
"""

from __future__ import annotations

import time

from himari.daemon.bus import Bus
from himari.daemon.events import OrderIntent
from himari.daemon.orders.manager import OrderManager
from himari.daemon.risk.engine import RiskEngine
from himari.daemon.stagetimer import StageTimer


class RiskGate:
    def __init__(self, bus: Bus, risk: RiskEngine, om: OrderManager, timer: StageTimer) -> None:
        self.bus = bus
        self.risk = risk
        self.om = om
        self.timer = timer

    def attach(self, order: int = 10) -> None:
        self.bus.subscribe(OrderIntent, self.on_intent, name="risk_gate", order=order)

    def on_intent(self, intent: OrderIntent) -> None:
        t0 = time.perf_counter_ns()
        verdict = self.risk.validate(intent, self.om.position(intent.instrument_id), intent.ts_ns)
        t1 = time.perf_counter_ns()
        self.timer.record("risk_validate", t1 - t0)
        self.bus.publish(verdict)
        if not verdict.approved:
            return
        stop = intent.stop_loss if intent.stop_loss is not None else verdict.stop_loss
        target = intent.take_profit if intent.take_profit is not None else verdict.take_profit
        t2 = time.perf_counter_ns()
        self.om.submit(intent, verdict.quantity, stop, target)
        self.timer.record("order_submit", time.perf_counter_ns() - t2)
