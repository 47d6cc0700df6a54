"""The order manager against a model broker, as a Hypothesis state machine.

The broker accepts, rejects, fills (partially) with execution ids, cancels on request, loses an
order now and then and books fills nobody here asked for (external). What it does reaches the
manager as stream events that the rules deliver late, out of order and more than once, while REST
status reports (`apply_status_report`, `reconcile`) race them, and restarts rebuild the manager
from its own state (`restore`). Invariants, after every step: each execution id is booked at most
once and with the broker's quantity; an order's booked fills never exceed the broker's; the
position is exactly the sum of the broker's fills booked so far (no position adjustments); no order
leaves a terminal state. At the end, after delivering everything and reconciling, every order's
fills and every position equal the broker's.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from himari.daemon import events as ev
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.orders.manager import OrderManager
from himari.daemon.orders.recovery import RecoveredState
from himari.daemon.orders.state import TERMINAL_STATES
from himari.daemon.venue import (FillReport, OrderRequest, OrderStatusReport, PositionReport)

INSTRUMENTS = {"ES": Instrument(id="ES", tick_size=Decimal("0.25"), multiplier=Decimal(50)),
               "NQ": Instrument(id="NQ", tick_size=Decimal("0.25"), multiplier=Decimal(20))}
TERMINAL = {"filled", "cancelled", "rejected", "expired"}


@dataclass
class BrokerOrder:
    request: OrderRequest
    status: str = "new"  # new (not yet acknowledged) | accepted | partially_filled | terminal ones
    filled: int = 0
    cancel_asked: bool = False

    def report(self) -> OrderStatusReport:
        r = self.request
        return OrderStatusReport(client_order_id=r.client_order_id, venue_order_id="B-" + r.client_order_id,
                                 instrument_id=r.instrument_id, side=r.side, quantity=r.quantity,
                                 filled=self.filled,
                                 status="accepted" if self.status == "new" else self.status,
                                 ts_ns=0)


class ModelBroker:
    """The truth. Implements the ExecutionClient side the manager calls; what it does is queued
    as stream events that the state machine delivers when and as often as it likes."""

    def __init__(self) -> None:
        self.listener = None
        self.orders: dict[str, BrokerOrder] = {}
        self.fills: list[FillReport] = []
        self.stream: list[tuple] = []
        self.lose_next = False
        self.ts = 0
        self.execs = 0

    # ---- ExecutionClient

    def set_listener(self, listener) -> None:
        self.listener = listener

    @property
    def connected(self) -> bool:
        return True

    def submit(self, request: OrderRequest) -> None:
        if self.lose_next:  # lost on the way: the broker never hears of it
            self.lose_next = False
            return
        self.orders[request.client_order_id] = BrokerOrder(request)

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        order = self.orders.get(client_order_id)
        if order is not None:
            order.cancel_asked = True

    async def query_order(self, client_order_id: str) -> OrderStatusReport | None:
        order = self.orders.get(client_order_id)
        return order.report() if order else None

    async def open_orders(self) -> list[OrderStatusReport]:
        return [o.report() for o in self.orders.values() if o.status not in TERMINAL]

    async def fills_since(self, ts_ns: int) -> list[FillReport]:
        return [f for f in self.fills if f.ts_ns >= ts_ns]

    async def positions(self) -> list[PositionReport]:
        return [PositionReport(instrument_id=i, quantity=q) for i, q in self.position().items()]

    async def account(self):  # not used by the manager
        raise NotImplementedError

    # ---- broker actions

    def tick(self) -> int:
        self.ts += 10
        return self.ts

    def position(self, exec_ids: set[str] | None = None) -> dict[str, int]:
        out = {i: 0 for i in INSTRUMENTS}
        for f in self.fills:
            if exec_ids is None or f.exec_id in exec_ids:
                out[f.instrument_id] += f.side * f.quantity
        return out

    def working(self) -> list[BrokerOrder]:
        return [o for o in self.orders.values() if o.status not in TERMINAL]

    def fill(self, order: BrokerOrder | None, quantity: int, price: int,
             instrument_id: str = "", side: int = 0, coid: str = "") -> None:
        self.execs += 1
        if order is not None:
            r = order.request
            coid, instrument_id, side = r.client_order_id, r.instrument_id, r.side
            quantity = min(quantity, r.quantity - order.filled)
            order.filled += quantity
            order.status = "filled" if order.filled == r.quantity else "partially_filled"
        report = FillReport(exec_id=f"EX-{self.execs}", client_order_id=coid,
                            instrument_id=instrument_id, side=side, quantity=quantity,
                            price=price, fee=Decimal("0.25"), liquidity="taker", ts_ns=self.tick())
        self.fills.append(report)
        self.stream.append(("fill", report))


class ExecutionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broker = ModelBroker()
        self.bus = Bus()
        self.clock = ReplayClock(0)
        self.booked: list[ev.Fill] = []
        self.discrepancies: list[ev.ExecutionDiscrepancy] = []
        self.bus.subscribe(ev.Fill, self.booked.append, name="t.fills")
        self.bus.subscribe(ev.ExecutionDiscrepancy, self.discrepancies.append, name="t.disc")
        self.restarts = 0
        self.om = self._manager()
        self.intents = 0

    def _manager(self) -> OrderManager:
        ids = IdSource(f"S{self.restarts}")  # a new session tag per run, as the daemon does
        return OrderManager(self.bus, self.clock, ids, INSTRUMENTS, self.broker,
                            ack_timeout_ns=50)

    def _advance(self) -> int:
        self.clock.advance_to(self.clock.now_ns() + 7)
        return self.clock.now_ns()

    # ---- the manager's side

    @rule(instrument=st.sampled_from(sorted(INSTRUMENTS)), side=st.sampled_from([1, -1]),
          quantity=st.integers(1, 5), lost=st.booleans())
    def submit(self, instrument: str, side: int, quantity: int, lost: bool) -> None:
        self.intents += 1
        self.broker.lose_next = lost and self.intents % 3 == 0  # now and then
        intent = ev.OrderIntent(event_id=f"I-{self.intents}", ts_ns=self._advance(),
                                decision_id="D", strategy_id="s", instrument_id=instrument,
                                side=side, quantity=quantity)
        self.om.submit(intent, quantity)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        open_ = self.om.open_orders()
        if open_:
            self._advance()
            self.om.cancel(data.draw(st.sampled_from(open_)).order_id)

    # ---- the broker's side

    @rule(data=st.data())
    def broker_acks_or_rejects(self, data: st.DataObject) -> None:
        new = [o for o in self.broker.orders.values() if o.status == "new"]
        if not new:
            return
        order = data.draw(st.sampled_from(new))
        coid = order.request.client_order_id
        if data.draw(st.booleans()):
            order.status = "accepted"
            self.broker.stream.append(("accepted", coid, "B-" + coid, self.broker.tick()))
        else:
            order.status = "rejected"
            self.broker.stream.append(("rejected", coid, "no margin", self.broker.tick()))

    @rule(data=st.data(), quantity=st.integers(1, 5), price=st.integers(9_990, 10_010))
    def broker_fills(self, data: st.DataObject, quantity: int, price: int) -> None:
        working = self.broker.working()
        if working:
            self.broker.fill(data.draw(st.sampled_from(working)), quantity, price)

    @rule(data=st.data())
    def broker_cancels(self, data: st.DataObject) -> None:
        asked = [o for o in self.broker.working() if o.cancel_asked]
        if asked:
            order = data.draw(st.sampled_from(asked))
            order.status = "cancelled"
            self.broker.stream.append(("cancelled", order.request.client_order_id, "asked",
                                       self.broker.tick()))

    @rule(instrument=st.sampled_from(sorted(INSTRUMENTS)), side=st.sampled_from([1, -1]),
          quantity=st.integers(1, 3))
    def broker_external_fill(self, instrument: str, side: int, quantity: int) -> None:
        self.broker.fill(None, quantity, 10_000, instrument, side,
                         coid=f"MANUAL-{self.broker.execs + 1}")

    # ---- delivery: late, out of order, duplicated

    @rule(data=st.data(), keep=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool) -> None:
        stream = self.broker.stream
        if not stream:
            return
        i = data.draw(st.integers(0, len(stream) - 1))
        event = stream[i] if keep else stream.pop(i)  # keep: it will come again (duplicate)
        self._deliver(event)

    def _deliver(self, event: tuple) -> None:
        kind = event[0]
        if kind == "fill":
            f: FillReport = event[1]
            self.om.on_fill(f.client_order_id, f.exec_id, f.quantity, f.price, f.fee,
                            f.liquidity, f.ts_ns, instrument_id=f.instrument_id, side=f.side)
        elif kind == "accepted":
            self.om.on_accepted(event[1], event[2], event[3])
        elif kind == "rejected":
            self.om.on_rejected(event[1], event[2], event[3])
        elif kind == "cancelled":
            self.om.on_cancelled(event[1], event[2], event[3])

    # ---- REST racing the stream, timeouts, restarts

    @rule(data=st.data(), with_fills=st.booleans())
    def status_report(self, data: st.DataObject, with_fills: bool) -> None:
        open_ = self.om.open_orders()
        if not open_:
            return
        order = data.draw(st.sampled_from(open_))
        coid = order.client_order_id
        report = asyncio.run(self.broker.query_order(coid))
        fills = [f for f in self.broker.fills if f.client_order_id == coid] if with_fills else []
        self.om.apply_status_report(report, self._advance(), client_order_id=coid, fills=fills)

    @rule()
    def overdue_orders_are_queried(self) -> None:
        now = self._advance()
        for order in self.om.overdue(now + 100):
            report = asyncio.run(self.broker.query_order(order.client_order_id))
            self.om.apply_status_report(report, now, client_order_id=order.client_order_id)

    @rule()
    def reconcile(self) -> None:
        asyncio.run(self.om.reconcile(self.broker, self._advance()))

    @rule()
    def restart(self) -> None:
        old = self.om
        state = RecoveredState(orders=copy.deepcopy(old.orders),
                               positions=copy.deepcopy(old.positions),
                               exec_ids={f.exec_id for f in self.booked})
        self.restarts += 1
        self.om = self._manager()  # takes over the broker's listener
        self.om.restore(state)

    # ---- invariants

    def _booked_ids(self) -> set[str]:
        return {f.exec_id for f in self.booked}

    @invariant()
    def every_fill_counts_once(self) -> None:
        ids = [f.exec_id for f in self.booked]
        assert len(ids) == len(set(ids)), "an execution id was booked twice"
        truth = {f.exec_id: f for f in self.broker.fills}
        for f in self.booked:
            assert f.quantity == truth[f.exec_id].quantity and f.side == truth[f.exec_id].side
        for coid, border in self.broker.orders.items():
            order = self.om.by_client_order_id(coid)
            assert order is not None and order.filled <= border.filled

    @invariant()
    def positions_follow_the_booked_broker_fills(self) -> None:
        expected = self.broker.position(self._booked_ids())
        for inst in INSTRUMENTS:
            assert self.om.position(inst) == expected[inst]
        assert not [d for d in self.discrepancies if d.kind == "position_mismatch"]

    @invariant()
    def no_order_leaves_a_terminal_state(self) -> None:
        for order in self.om.orders.values():
            states = [s for s, _ in order.history]
            terminal = [i for i, s in enumerate(states) if s in TERMINAL_STATES]
            if terminal:
                assert terminal[0] == len(states) - 1, f"{order.order_id} left {states}"

    def teardown(self) -> None:
        while self.broker.stream:
            self._deliver(self.broker.stream.pop())  # last first: reordered to the end
        asyncio.run(self.om.reconcile(self.broker, self._advance()))
        for coid, border in self.broker.orders.items():
            assert self.om.by_client_order_id(coid).filled == border.filled
        assert {i: self.om.position(i) for i in INSTRUMENTS} == self.broker.position()
        assert not [d for d in self.discrepancies if d.kind == "position_mismatch"]


ExecutionMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestExecutionAgainstAModelBroker = ExecutionMachine.TestCase
