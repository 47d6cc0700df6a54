"""The risk gate: every order intent passes risk before the order manager sees it.

On `OrderIntent` it routes the intent to its instrument's risk engine (through `PortfolioRisk`,
which also applies the portfolio limits), publishes the verdict (approved or not, so the strategy
and the records see it), and hands an approved intent to the order manager with the approved
quantity and bracket. A rejected intent goes no further and changes no order state.

Working orders: risk counts the worst case, the filled position plus the leaves of the working
orders that are not reduce-only, per side. The gate keeps the manager's live `Order` records of
those orders (their leaves shrink with a fill at the same moment the position grows, so the two
never disagree) and sums their leaves per intent: O(working orders), not a scan of every order.
An order is tracked from `OrderSubmitted` (subscribed first, so no handler can send an intent before
it counts) and, for the gate's own orders, as soon as `submit` returns (covers a manager that is
still draining earlier events, which defers OrderSubmitted); it is dropped once its leaves are 0.
Orders already open at start-up (recovered from the journal) are picked up by `resync_working()`,
which `attach()` calls; call it again after a recovery.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from himari.daemon.bus import Bus
from himari.daemon.events import OrderIntent, OrderSubmitted, RiskVerdict
from himari.daemon.orders.manager import OrderManager
from himari.daemon.orders.state import Order
from himari.daemon.risk.engine import RiskEngine
from himari.daemon.risk.portfolio import PortfolioRisk
from himari.daemon.stagetimer import StageTimer


class RiskGate:
    def __init__(self, bus: Bus, risk: RiskEngine | PortfolioRisk, om: OrderManager,
                 timer: StageTimer) -> None:
        self.bus = bus
        self.risk = risk
        self.portfolio = risk if isinstance(risk, PortfolioRisk) else \
            PortfolioRisk.of_engines([risk], risk.cfg.portfolio, risk.ids)
        self.om = om
        self.timer = timer
        # Market hours (a broker's clock; None = unknown or always open, as a simulator)
        self.market_open: Callable[[], bool | None] = lambda: None
        # instrument -> order id -> the manager's record of a working non-reduce-only order
        self._working: dict[str, dict[str, Order]] = {}

    def attach(self, order: int = 10) -> None:
        self.resync_working()
        self.bus.subscribe(OrderSubmitted, self.on_submitted, name="risk_gate.working", order=0)
        self.bus.subscribe(OrderIntent, self.on_intent, name="risk_gate", order=order)

    def resync_working(self) -> None:
        """Track every open order of the manager that can add exposure (not reduce-only)."""
        self._working = {}
        for o in self.om.open_orders():
            self._track(o)

    def _track(self, o: Order | None) -> None:
        if o is not None and not o.reduce_only and o.leaves > 0:
            self._working.setdefault(o.instrument_id, {})[o.order_id] = o

    def on_submitted(self, ev: OrderSubmitted) -> None:
        self._track(self.om.get(ev.order_id))

    def working_lots(self, instrument_id: str) -> tuple[int, int]:
        """(buy, sell) leaves of the tracked working orders; drops the ones that have ended."""
        orders = self._working.get(instrument_id)
        if not orders:
            return 0, 0
        buy = sell = 0
        ended = False
        for o in orders.values():
            left = o.leaves  # 0 once terminal
            if left <= 0:
                ended = True
            elif o.side > 0:
                buy += left
            else:
                sell += left
        if ended:
            self._working[instrument_id] = {k: o for k, o in orders.items() if o.leaves > 0}
        return buy, sell

    def exposure(self, instrument_id: str) -> tuple[int, int, int]:
        """(filled position, working buy leaves, working sell leaves) in lots."""
        buy, sell = self.working_lots(instrument_id)
        return self.om.position(instrument_id), buy, sell

    def on_intent(self, intent: OrderIntent) -> None:
        t0 = time.perf_counter_ns()
        position, buy, sell = self.exposure(intent.instrument_id)
        reducing = intent.reduce_only or (position * intent.side < 0
                                          and intent.quantity <= abs(position))
        if not reducing and self.market_open() is False:
            verdict = RiskVerdict(
                event_id=self.portfolio.ids.next("RV"), ts_ns=intent.ts_ns,
                intent_id=intent.event_id, decision_id=intent.decision_id, approved=False,
                quantity=0, rule="market_closed",
                reason="the broker's clock says the market is closed: no entries (exits pass)")
        else:
            verdict = self.portfolio.validate(intent, position, intent.ts_ns, buy, sell,
                                              self.exposure)
        t1 = time.perf_counter_ns()
        self.timer.record("risk_validate", t1 - t0)
        self.bus.publish(verdict)
        if not verdict.approved:
            return
        stop = intent.stop_loss if intent.stop_loss is not None else verdict.stop_loss
        target = intent.take_profit if intent.take_profit is not None else verdict.take_profit
        t2 = time.perf_counter_ns()
        self._track(self.om.submit(intent, verdict.quantity, stop, target))
        self.timer.record("order_submit", time.perf_counter_ns() - t2)
