"""Reconciliation compares positions only once every execution they include is booked (found by
tests/e2e/test_paper_faults.py: with trade updates delayed and the fill read slowed by 429s, an
execution between the fill read and the positions read was "adjusted" into the position and then
booked again when its fill arrived on the stream, a position twice wrong)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from himari.daemon import events as ev
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.orders.manager import OrderManager
from himari.daemon.venue import FillReport, OrderRequest, OrderStatusReport, PositionReport

ES = Instrument(id="ES", tick_size=Decimal("0.01"))


class Venue:
    """Executions happen at the venue while reconciliation reads it: `execute_at` names the
    call (fills_since or positions, by call number) before which an execution happens."""

    def __init__(self) -> None:
        self.listener: Any = None
        self.requests: list[OrderRequest] = []
        self.executed: list[FillReport] = []
        self.calls: list[str] = []
        self.on_call: dict[int, Any] = {}

    def set_listener(self, listener: Any) -> None:
        self.listener = listener

    def submit(self, request: OrderRequest) -> None:
        self.requests.append(request)

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        pass

    def _call(self, name: str) -> None:
        self.calls.append(name)
        action = self.on_call.get(len(self.calls))
        if action is not None:
            action()

    def execute(self, qty: int, exec_id: str) -> FillReport:
        r = self.requests[0]
        fill = FillReport(exec_id=exec_id, client_order_id=r.client_order_id, instrument_id="ES",
                          side=r.side, quantity=qty, price=10000, fee=Decimal(0),
                          liquidity="taker", ts_ns=1_500 + len(self.executed))
        self.executed.append(fill)
        return fill

    async def fills_since(self, ts_ns: int) -> list[FillReport]:
        self._call("fills")
        return [f for f in self.executed if f.ts_ns >= ts_ns]

    async def positions(self) -> list[PositionReport]:
        self._call("positions")
        qty = sum(f.quantity * f.side for f in self.executed)
        return [PositionReport(instrument_id="ES", quantity=qty)] if qty else []

    async def query_order(self, coid: str) -> OrderStatusReport | None:
        self._call("order")
        r = self.requests[0]
        filled = sum(f.quantity for f in self.executed)
        return OrderStatusReport(client_order_id=coid, venue_order_id="V-1", instrument_id="ES",
                                 side=r.side, quantity=r.quantity, filled=filled,
                                 status="filled" if filled == r.quantity else "accepted",
                                 ts_ns=1_000)


def rig() -> tuple[OrderManager, Venue, list[Any]]:
    bus, venue, seen = Bus(), Venue(), []
    bus.subscribe(ev.ExecutionDiscrepancy, seen.append, name="rec")
    om = OrderManager(bus, ReplayClock(1_000), IdSource("T"), {"ES": ES}, venue)
    om.submit(ev.OrderIntent(event_id="I-1", ts_ns=1_000, decision_id="D-1", strategy_id="s",
                             instrument_id="ES", side=1, quantity=2), 2, None, None)
    om.on_accepted(venue.requests[0].client_order_id, "V-1", 1_100)
    return om, venue, seen


async def test_an_execution_after_the_fill_read_is_booked_not_adjusted() -> None:
    om, venue, seen = rig()
    venue.on_call[2] = lambda: venue.execute(2, "X-1")  # after the fill read, before the query
    await om.reconcile(venue, 2_000)
    assert om.position("ES") == 2 and om.counters["position_mismatches"] == 0
    assert [d.kind for d in seen] == []
    coid = venue.requests[0].client_order_id
    om.on_fill(coid, "X-1", 2, 10000, Decimal(0), "taker", 2_100)  # the stream, late
    assert om.position("ES") == 2


async def test_an_execution_booked_from_the_stream_during_the_positions_read_is_not_doubled(
        ) -> None:
    om, venue, seen = rig()
    coid = venue.requests[0].client_order_id

    # the positions answer is taken before the execution, but the stream books it meanwhile
    original = venue.positions
    state = {"n": 0}

    async def positions() -> list[PositionReport]:
        state["n"] += 1
        before = await original()
        if state["n"] == 1:
            venue.execute(2, "X-1")
            om.on_fill(coid, "X-1", 2, 10000, Decimal(0), "taker", 2_050)
        return before

    venue.positions = positions  # type: ignore[method-assign]
    await om.reconcile(venue, 2_000)
    assert om.position("ES") == 2 and om.counters["position_mismatches"] == 0
    assert state["n"] == 2 and [d.kind for d in seen] == []


async def test_a_real_difference_is_still_adjusted() -> None:
    om, venue, seen = rig()

    async def positions() -> list[PositionReport]:
        return [PositionReport(instrument_id="ES", quantity=3)]

    venue.positions = positions  # type: ignore[method-assign]  # no fill to show for it
    await om.reconcile(venue, 2_000)
    assert om.position("ES") == 3 and om.counters["position_mismatches"] == 1
    assert [d.kind for d in seen] == ["position_mismatch"]
