"""OrderManager against a fake venue: lifecycle, publish order, bad venue messages, brackets."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from himari.daemon import events as ev
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.orders.journal import Journal
from himari.daemon.orders.manager import OrderManager
from himari.daemon.orders.state import Order, OrderState
from himari.daemon.orders.recovery import RecoveredState
from himari.daemon.venue import (CancelRequest, FillReport, OrderRequest, OrderStatusReport,
                                 PositionReport, VenueListener)

D = Decimal
S = OrderState
ES = Instrument(id="ES", tick_size=D("0.01"), multiplier=D(50))
EVENT_TYPES = [ev.OrderSubmitted, ev.OrderAccepted, ev.OrderPartiallyFilled, ev.OrderFilled,
               ev.OrderCancelled, ev.OrderRejected, ev.OrderExpired, ev.Fill, ev.PositionUpdate]


class FakeVenue:
    """Records requests and cancels; the test drives the listener. Options answer synchronously."""

    def __init__(self) -> None:
        self.listener: VenueListener | None = None
        self.requests: list[OrderRequest] = []
        self.cancels: list[str] = []
        self.confirm_cancels = True
        self.reject_with: str | None = None
        self.fill_market_at: int | None = None
        self.raise_on_submit = False

    def set_listener(self, listener: VenueListener) -> None:
        self.listener = listener

    def submit(self, request: OrderRequest) -> None:
        self.requests.append(request)
        assert self.listener is not None
        if self.raise_on_submit:
            raise RuntimeError("link down")
        if self.reject_with is not None:
            self.listener.on_rejected(request.client_order_id, self.reject_with, request.ts_ns)
        elif self.fill_market_at is not None and request.order_type == "market":
            self.listener.on_accepted(request.client_order_id, "V1", request.ts_ns)
            self.listener.on_fill(request.client_order_id, f"V-E-{len(self.requests)}",
                                  request.quantity, self.fill_market_at, D("0.50"), "taker",
                                  request.ts_ns)

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        self.cancels.append(client_order_id)
        if self.confirm_cancels:
            assert self.listener is not None
            self.listener.on_cancelled(client_order_id, "cancelled", ts_ns)

    def request(self, order: Order) -> OrderRequest:
        return next(r for r in self.requests if r.client_order_id == order.client_order_id)


class Rig:
    def __init__(self, journal: Journal | None = None) -> None:
        self.bus = Bus()
        self.clock = ReplayClock(1_000)
        self.ids = IdSource("T")
        self.venue = FakeVenue()
        self.events: list[Any] = []
        for t in EVENT_TYPES:
            self.bus.subscribe(t, self.events.append, name=f"rec-{t.__name__}")
        self.om = OrderManager(self.bus, self.clock, self.ids, {"ES": ES}, self.venue, journal)
        self.n = 0
        self.execs = 0

    def intent(self, side: int = 1, quantity: int = 2, **kw: Any) -> ev.OrderIntent:
        self.n += 1
        return ev.OrderIntent(event_id=f"I-{self.n}", ts_ns=self.clock.now_ns(),
                              decision_id=f"D-{self.n}", strategy_id="s", instrument_id="ES",
                              side=side, quantity=quantity, **kw)

    def submit(self, side: int = 1, quantity: int = 2, sl: int | None = None,
               tp: int | None = None, **kw: Any) -> Order:
        return self.om.submit(self.intent(side, quantity, **kw), quantity, sl, tp)

    def fill(self, order: Order, qty: int, price: int, fee: str = "0.50", ts: int = 2_000) -> None:
        self.execs += 1
        self.om.on_fill(order.client_order_id, f"X-{self.execs}", qty, price, D(fee), "taker", ts)

    def types(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def leg(self, entry: Order, role: str, live: bool = True) -> Order:
        legs = [o for o in self.om.legs(entry.order_id)
                if o.role == role and (not live or not o.is_terminal)]
        assert len(legs) == 1, legs
        return legs[0]


def test_submit_publishes_then_sends() -> None:
    rig = Rig()
    seen: list[int] = []
    rig.bus.subscribe(ev.OrderSubmitted, lambda e: seen.append(len(rig.venue.requests)), name="x")
    order = rig.submit(side=-1, quantity=3, order_type="limit", price=10100,
                       time_in_force="day", reduce_only=True)
    assert seen == [0]  # published before the venue saw it
    assert order.state is S.SUBMITTED and order.order_id == "O-T-1"
    assert order.client_order_id == "C-T-1" and order.intent_id == "I-1"
    (sub,) = rig.events
    assert isinstance(sub, ev.OrderSubmitted)
    assert (sub.order_id, sub.client_order_id, sub.side, sub.quantity, sub.order_type,
            sub.price, sub.decision_id, sub.intent_id) == (
        order.order_id, order.client_order_id, -1, 3, "limit", 10100, "D-1", "I-1")
    req = rig.venue.request(order)
    assert (req.side, req.quantity, req.order_type, req.price, req.time_in_force,
            req.reduce_only, req.ts_ns) == (-1, 3, "limit", 10100, "day", True, 1_000)
    assert rig.om.open_orders() == [order]


def test_client_order_ids_are_unique() -> None:
    rig = Rig()
    orders = [rig.submit(sl=9900, tp=10200) for _ in range(50)]
    for o in orders:
        rig.fill(o, 2, 10000)  # each places two legs
    ids = [r.client_order_id for r in rig.venue.requests]
    assert len(ids) == 150 and len(set(ids)) == 150
    assert len({o.order_id for o in rig.om.orders.values()}) == 150


def test_accept_partial_fill_then_fill_publish_order() -> None:
    rig = Rig()
    order = rig.submit(quantity=3)
    rig.om.on_accepted(order.client_order_id, "V-9", 1_500)
    assert order.state is S.ACCEPTED and order.venue_order_id == "V-9"
    rig.fill(order, 1, 10000, ts=2_000)
    assert order.state is S.PARTIALLY_FILLED and order.leaves == 2
    rig.fill(order, 2, 10003, ts=3_000)
    assert order.state is S.FILLED and order.avg_fill_price == D(30006) / 3
    assert rig.types() == ["OrderSubmitted", "OrderAccepted",
                           "OrderPartiallyFilled", "Fill", "PositionUpdate",
                           "OrderFilled", "Fill", "PositionUpdate"]
    part, fill1, pu1, done, fill2, pu2 = rig.events[2:]
    assert (part.filled_quantity, part.leaves_quantity) == (1, 2)
    assert done.filled_quantity == 3
    assert part.fill_id == fill1.fill_id == pu1.fill_id and done.fill_id == fill2.fill_id
    assert fill1.fill_id != fill2.fill_id
    assert (fill1.quantity, fill1.price, fill1.side, fill1.decision_id, fill1.order_id) == (
        1, 10000, 1, "D-1", order.order_id)
    assert fill2.fee == D("0.50") and fill2.ts_ns == 3_000
    assert (pu1.quantity, pu2.quantity) == (1, 3)
    assert pu2.avg_price == D("100.02") and pu2.fees == D("1.00")
    assert rig.om.position("ES") == 3 and rig.om.open_orders() == []
    assert len({e.event_id for e in rig.events}) == len(rig.events)


def test_cancel() -> None:
    rig = Rig()
    order = rig.submit()
    rig.om.on_accepted(order.client_order_id, "V", 1_100)
    assert rig.om.cancel(order.order_id)
    assert rig.venue.cancels == [order.client_order_id]
    assert order.state is S.CANCELLED and order.leaves == 0
    assert isinstance(rig.events[-1], ev.OrderCancelled)
    assert not rig.om.cancel(order.order_id)  # terminal: nothing to cancel
    assert not rig.om.cancel("O-nope")
    assert rig.venue.cancels == [order.client_order_id]
    assert rig.om.open_orders() == []


def test_fill_racing_a_cancel_is_booked() -> None:
    rig = Rig()
    rig.venue.confirm_cancels = False
    order = rig.submit()
    assert rig.om.cancel(order.order_id)
    assert not rig.om.cancel(order.order_id)  # one request at a time
    assert order.state is S.SUBMITTED and order.cancel_requested_ns == 1_000
    rig.fill(order, 2, 10000)
    assert order.state is S.FILLED and rig.om.position("ES") == 2
    rig.om.on_cancelled(order.client_order_id, "too late", 3_000)  # illegal now: counted
    assert order.state is S.FILLED
    assert rig.om.counters["illegal_transitions"] == 1


def test_reject_leaves_state_consistent() -> None:
    rig = Rig()
    order = rig.submit()
    rig.om.on_rejected(order.client_order_id, "margin", 1_200)
    assert order.state is S.REJECTED and order.reason == "margin"
    assert isinstance(rig.events[-1], ev.OrderRejected) and rig.events[-1].reason == "margin"
    n = len(rig.events)
    rig.om.on_accepted(order.client_order_id, "V", 1_300)
    assert len(rig.events) == n
    assert rig.om.counters["illegal_transitions"] == 1
    assert rig.om.position("ES") == 0 and rig.om.open_orders() == []
    assert rig.om.positions.get("ES") is None


def test_synchronous_reject_inside_submit() -> None:
    rig = Rig()
    rig.venue.reject_with = "closed market"
    order = rig.submit()
    assert order.state is S.REJECTED
    assert rig.types() == ["OrderSubmitted", "OrderRejected"]


def test_venue_exception_rejects_locally() -> None:
    rig = Rig()
    rig.venue.raise_on_submit = True
    order = rig.submit()
    assert order.state is S.REJECTED and "link down" in order.reason
    assert rig.om.counters["venue_errors"] == 1
    assert rig.om.open_orders() == []


@pytest.mark.parametrize(("kw", "sl", "tp", "why"), [
    ({"order_type": "limit"}, None, None, "needs a price"),
    ({"order_type": "twap"}, None, None, "order_type"),
    ({"time_in_force": "fok"}, None, None, "time_in_force"),
    ({}, 10200, 9900, "wrong sides"),  # long with stop above target
    ({"order_type": "limit", "price": 10000}, 10050, None, "losing side"),
    ({"order_type": "limit", "price": 10000}, None, 9950, "winning side"),
])
def test_invalid_orders_are_rejected_locally(kw: dict[str, Any], sl: int | None, tp: int | None,
                                             why: str) -> None:
    rig = Rig()
    order = rig.submit(sl=sl, tp=tp, **kw)
    assert order.state is S.REJECTED and why in order.reason
    assert rig.venue.requests == [] and rig.types() == ["OrderRejected"]
    assert rig.om.counters["local_rejects"] == 1


def test_bad_quantity_and_instrument_are_rejected_locally() -> None:
    rig = Rig()
    assert rig.om.submit(rig.intent(), 0, None, None).state is S.REJECTED
    other = ev.OrderIntent(event_id="I-x", ts_ns=0, decision_id="D", strategy_id="s",
                           instrument_id="CL", side=1, quantity=1)
    assert "unknown instrument" in rig.om.submit(other, 1, None, None).reason
    assert rig.venue.requests == []


def test_unknown_client_order_id_is_counted() -> None:
    rig = Rig()
    om = rig.om
    om.on_accepted("C-zz", "V", 1)
    om.on_rejected("C-zz", "r", 1)
    om.on_fill("C-zz", "X-1", 1, 100, D(0), "taker", 1)  # no instrument / side: not bookable
    om.on_cancelled("C-zz", "r", 1)
    om.on_expired("C-zz", "r", 1)
    assert om.counters["unknown_orders"] == 5 and rig.events == []


def test_invalid_fill_quantities_are_refused() -> None:
    rig = Rig()
    order = rig.submit(quantity=2)
    rig.fill(order, 1, 10000)
    n = len(rig.events)
    rig.fill(order, 0, 10000)
    rig.fill(order, -1, 10000)
    assert rig.om.counters["invalid_fills"] == 2
    assert len(rig.events) == n and order.filled == 1 and rig.om.position("ES") == 1
    rig.fill(order, 1, 10000)
    assert order.state is S.FILLED and rig.om.position("ES") == 2


def test_numpy_integers_are_accepted_and_floats_refused() -> None:
    rig = Rig()
    order = rig.submit(quantity=2)
    rig.om.on_fill(order.client_order_id, "X-1", np.int64(1), np.int64(10000), D(0), "maker", 5)
    fill = next(e for e in rig.events if isinstance(e, ev.Fill))
    assert type(fill.quantity) is int and type(fill.price) is int
    assert fill.liquidity == "maker"
    rig.om.on_fill(order.client_order_id, "X-2", 1, 10000.5, D(0), "taker", 6)  # type: ignore[arg-type]
    assert rig.om.counters["invalid_fills"] == 1 and order.filled == 1


def test_expiry_and_double_accept() -> None:
    rig = Rig()
    order = rig.submit(quantity=2, time_in_force="ioc")
    rig.om.on_accepted(order.client_order_id, "V", 1)
    rig.om.on_accepted(order.client_order_id, "V", 2)
    assert rig.om.counters["illegal_transitions"] == 1 and order.state is S.ACCEPTED
    rig.fill(order, 1, 10000)
    rig.om.on_expired(order.client_order_id, "ioc remainder", 3)
    assert order.state is S.EXPIRED and order.filled == 1 and order.leaves == 0
    assert isinstance(rig.events[-1], ev.OrderExpired)


def test_pnl_through_the_manager_with_flip_and_mark() -> None:
    rig = Rig()
    rig.fill(rig.submit(quantity=2), 2, 10000, fee="0.10")
    rig.fill(rig.submit(side=-1, quantity=3), 3, 10100, fee="0.20")
    pu = rig.events[-1]
    assert isinstance(pu, ev.PositionUpdate)
    assert pu.quantity == -1 and pu.realized_pnl == D("100.00")  # 2 lots * 100 ticks * 0.50
    assert pu.avg_price == D("101.00") and pu.fees == D("0.30")
    rig.om.mark("ES", 10000)
    assert rig.om.positions.unrealized_pnl("ES") == D("50.00")
    assert rig.om.positions.equity(D(0)) == D("149.70")


# ---------------------------------------------------------------------------------- brackets


def bracket(rig: Rig, side: int = 1, quantity: int = 2) -> Order:
    sl, tp = (9900, 10200) if side == 1 else (10100, 9800)
    entry = rig.submit(side=side, quantity=quantity, sl=sl, tp=tp)
    rig.fill(entry, quantity, 10000)
    return entry


def test_bracket_legs_are_placed_after_the_entry_fills() -> None:
    rig = Rig()
    entry = rig.submit(quantity=2, sl=9900, tp=10200)
    assert len(rig.venue.requests) == 1  # nothing before a fill
    rig.fill(entry, 2, 10000)
    stop, tp = rig.leg(entry, "stop_loss"), rig.leg(entry, "take_profit")
    rs, rt = rig.venue.request(stop), rig.venue.request(tp)
    assert (rs.side, rs.quantity, rs.order_type, rs.price, rs.reduce_only, rs.time_in_force) == (
        -1, 2, "stop", 9900, True, "gtc")
    assert (rt.side, rt.quantity, rt.order_type, rt.price, rt.reduce_only) == (
        -1, 2, "limit", 10200, True)
    assert stop.parent_order_id == tp.parent_order_id == entry.order_id
    assert entry.leg_order_ids == [stop.order_id, tp.order_id]
    assert stop.decision_id == entry.decision_id
    assert rig.types()[-5:] == ["OrderFilled", "Fill", "PositionUpdate",
                                "OrderSubmitted", "OrderSubmitted"]
    assert rig.events[-1].parent_order_id == entry.order_id


def test_stop_fill_cancels_take_profit() -> None:
    rig = Rig()
    entry = bracket(rig)
    stop, tp = rig.leg(entry, "stop_loss"), rig.leg(entry, "take_profit")
    rig.fill(stop, 2, 9900)
    assert stop.state is S.FILLED and tp.state is S.CANCELLED
    assert rig.venue.cancels == [tp.client_order_id]
    assert rig.om.position("ES") == 0 and rig.om.open_orders() == []
    assert len(rig.venue.requests) == 3  # nothing re-placed
    stats = rig.om.stats()
    assert (stats["submitted"], stats["filled"], stats["cancelled"], stats["bracket_legs"],
            stats["open_orders"]) == (3, 2, 1, 2, 0)
    assert rig.om.positions.realized_pnl() == D("-100.00")


def test_take_profit_fill_cancels_stop() -> None:
    rig = Rig()
    entry = bracket(rig, side=-1)
    stop, tp = rig.leg(entry, "stop_loss"), rig.leg(entry, "take_profit")
    assert rig.venue.request(stop).side == 1 and rig.venue.request(stop).price == 10100
    rig.fill(tp, 2, 9800)
    assert tp.state is S.FILLED and stop.state is S.CANCELLED
    assert rig.om.position("ES") == 0 and rig.om.open_orders() == []
    assert rig.om.positions.realized_pnl() == D("200.00")


def test_partial_leg_fill_resizes_the_other_leg() -> None:
    rig = Rig()
    entry = bracket(rig, quantity=3)
    stop, tp = rig.leg(entry, "stop_loss"), rig.leg(entry, "take_profit")
    rig.fill(stop, 1, 9900)
    assert tp.state is S.CANCELLED
    tp2 = rig.leg(entry, "take_profit")
    assert tp2 is not tp and rig.venue.request(tp2).quantity == 2 and tp2.reduce_only
    assert stop.leaves == 2 and rig.om.position("ES") == 2
    rig.fill(tp2, 1, 10200)  # now the stop shrinks to 1
    assert stop.state is S.CANCELLED
    stop2 = rig.leg(entry, "stop_loss")
    assert rig.venue.request(stop2).quantity == 1 and tp2.leaves == 1
    rig.fill(tp2, 1, 10200)
    assert stop2.state is S.CANCELLED and rig.om.position("ES") == 0
    assert rig.om.open_orders() == []


def test_resize_waits_for_the_cancel_confirmation() -> None:
    rig = Rig()
    rig.venue.confirm_cancels = False
    entry = bracket(rig, quantity=3)
    stop, tp = rig.leg(entry, "stop_loss"), rig.leg(entry, "take_profit")
    rig.fill(stop, 1, 9900)
    assert rig.venue.cancels == [tp.client_order_id] and tp.state is S.SUBMITTED
    assert len(rig.venue.requests) == 3  # no replacement while the old leg may still fill
    rig.fill(tp, 1, 10200)  # the old TP fills during the cancel round trip
    # target is now 1 (3 - 2 exited): the stop (2 left) is over-covering, so it is cancelled too
    assert stop.leaves == 2 and stop.cancel_requested_ns is not None
    assert rig.venue.cancels == [tp.client_order_id, stop.client_order_id]
    rig.om.on_cancelled(tp.client_order_id, "ok", 3_000)
    new_tp = rig.leg(entry, "take_profit")
    assert rig.venue.request(new_tp).quantity == 1  # 3 filled - 1 stopped - 1 taken
    rig.om.on_cancelled(stop.client_order_id, "ok", 3_100)
    new_stop = rig.leg(entry, "stop_loss")
    assert rig.venue.request(new_stop).quantity == 1
    assert rig.om.position("ES") == 1


def test_partially_filled_entry_places_legs_fill_by_fill() -> None:
    rig = Rig()
    entry = rig.submit(quantity=3, order_type="limit", price=10000, sl=9900, tp=10200)
    rig.fill(entry, 1, 10000)
    assert [rig.venue.request(o).quantity for o in rig.om.legs(entry.order_id)] == [1, 1]
    rig.fill(entry, 2, 10000)
    legs = rig.om.legs(entry.order_id)
    assert [(o.role, o.quantity) for o in legs] == [
        ("stop_loss", 1), ("take_profit", 1), ("stop_loss", 2), ("take_profit", 2)]
    assert all(not o.is_terminal for o in legs)  # growing never cancels a working leg
    rig.fill(legs[0], 1, 9900)
    rig.fill(legs[2], 2, 9900)
    assert legs[1].state is S.CANCELLED and legs[3].state is S.CANCELLED
    assert rig.om.position("ES") == 0 and rig.om.open_orders() == []


def test_leg_fill_cancels_the_entry_remainder() -> None:
    rig = Rig()
    entry = rig.submit(quantity=3, order_type="limit", price=10000, sl=9900, tp=10200)
    rig.fill(entry, 1, 10000)
    rig.fill(rig.leg(entry, "stop_loss"), 1, 9900)
    assert entry.state is S.CANCELLED and entry.filled == 1
    assert rig.om.open_orders() == [] and rig.om.position("ES") == 0


def test_cancelling_an_entry_keeps_legs_for_filled_lots() -> None:
    rig = Rig()
    entry = rig.submit(quantity=3, order_type="limit", price=10000, sl=9900, tp=10200)
    assert rig.om.cancel(entry.order_id) and entry.state is S.CANCELLED
    assert rig.om.legs(entry.order_id) == []  # unfilled entry: no legs, nothing else cancelled
    entry2 = rig.submit(quantity=3, order_type="limit", price=10000, sl=9900, tp=10200)
    rig.fill(entry2, 1, 10000)
    assert rig.om.cancel(entry2.order_id)
    stop, tp = rig.leg(entry2, "stop_loss"), rig.leg(entry2, "take_profit")
    assert not stop.is_terminal and not tp.is_terminal and stop.quantity == 1
    assert rig.venue.cancels == [entry.client_order_id, entry2.client_order_id]
    filled = bracket(rig)
    assert not rig.om.cancel(filled.order_id)  # filled: nothing working to cancel


def test_cancel_all_cancels_legs_without_replacing_them() -> None:
    rig = Rig()
    entry = bracket(rig)
    other = rig.submit(quantity=1, order_type="limit", price=9000)
    n_requests = len(rig.venue.requests)
    assert rig.om.cancel_all("ES") == 3
    assert rig.om.open_orders() == [] and other.state is S.CANCELLED
    assert len(rig.venue.requests) == n_requests
    assert rig.om.position("ES") == 2  # cancelling does not flatten
    assert all(o.state is S.CANCELLED for o in rig.om.legs(entry.order_id))


def test_rejected_leg_is_not_replaced_in_a_loop() -> None:
    rig = Rig()
    entry = rig.submit(quantity=2, sl=9900, tp=10200)
    rig.venue.reject_with = "no stops here"
    rig.fill(entry, 2, 10000)
    legs = rig.om.legs(entry.order_id)
    assert [(o.role, o.state) for o in legs] == [("stop_loss", S.REJECTED),
                                                 ("take_profit", S.REJECTED)]
    assert rig.om.counters["bracket_leg_failures"] == 2
    assert len(rig.venue.requests) == 3


def test_stop_only_bracket() -> None:
    rig = Rig()
    entry = rig.submit(quantity=2, sl=9900)
    rig.fill(entry, 2, 10000)
    (leg,) = rig.om.legs(entry.order_id)
    assert leg.role == "stop_loss" and leg.order_type == "stop"
    rig.fill(leg, 2, 9900)
    assert rig.om.position("ES") == 0 and rig.om.open_orders() == []


def test_events_stay_in_causal_order_when_a_handler_submits() -> None:
    """A strategy that reverses on every fill against a venue that fills at once: each fill's
    order event, Fill and PositionUpdate stay together and PositionUpdates never go back."""
    rig = Rig()
    rig.venue.fill_market_at = 10000
    done: list[int] = []

    def reverse(e: ev.OrderFilled) -> None:
        if len(done) < 3:
            done.append(1)
            rig.submit(side=-1 if rig.om.position("ES") > 0 else 1, quantity=4)

    rig.bus.subscribe(ev.OrderFilled, reverse, name="reverse")
    rig.submit(quantity=2)
    types = rig.types()
    assert types == ["OrderSubmitted", "OrderAccepted", "OrderFilled", "Fill", "PositionUpdate"] * 4
    positions = [e.quantity for e in rig.events if isinstance(e, ev.PositionUpdate)]
    assert positions == [2, -2, 2, -2] and rig.om.position("ES") == -2


def test_journal_is_written_before_publishing(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, fsync=False)
    rig = Rig(journal)
    checked: list[str] = []

    def on_event(e: Any) -> None:
        ids = {r.get("event_id") for r in Journal.read(path)}
        assert e.event_id in ids or isinstance(e, ev.PositionUpdate)
        checked.append(type(e).__name__)

    for t in (ev.OrderSubmitted, ev.OrderFilled, ev.Fill, ev.OrderCancelled):
        rig.bus.subscribe(t, on_event, name=f"j-{t.__name__}")
    entry = bracket(rig)
    rig.fill(rig.leg(entry, "take_profit"), 2, 10200)
    assert rig.bus.handler_errors == {}
    assert checked.count("OrderSubmitted") == 3 and "OrderCancelled" in checked
    journal.close()
    records = list(Journal.read(path))
    types = [r["type"] for r in records]
    assert types[:3] == ["OrderIntent", "OrderSubmitted", "OrderRequest"]  # intent first
    assert "CancelRequest" in types and types.count("Fill") == 2
    fills = [Journal.decode(r) for r in records if r["type"] == "Fill"]
    assert fills[1].fee == D("0.50") and fills[1].price == 10200
    assert [f.exec_id for f in fills] == ["X-1", "X-2"]
    # a cancel request is journaled as the CancelRequest Struct, so a reader can decode it
    cancel = next(r for r in records if r["type"] == "CancelRequest")
    decoded = msgspec.convert({k: v for k, v in cancel.items() if k != "type"}, CancelRequest)
    assert decoded.client_order_id == rig.leg(entry, "stop_loss", live=False).client_order_id
    assert decoded.reason == "oco"


# ---- D1: a bracket ends with its position


def test_strategy_exit_cancels_the_legs_of_the_closed_position() -> None:
    rig = Rig()
    entry = bracket(rig)  # long 2, stop and take-profit working
    exit_ = rig.submit(side=-1, quantity=2, reduce_only=True)
    rig.fill(exit_, 2, 10050)
    assert rig.om.position("ES") == 0
    assert all(leg.state is S.CANCELLED for leg in rig.om.legs(entry.order_id))
    assert rig.om.open_orders() == []
    n = len(rig.venue.requests)
    later = rig.submit(quantity=2)  # a new unbracketed long: the old bracket never comes back
    rig.fill(later, 2, 10000)
    assert len(rig.venue.requests) == n + 1 and rig.om.open_orders() == []


def test_reversal_cancels_old_legs_and_brackets_the_new_side() -> None:
    rig = Rig()
    old = bracket(rig, side=-1)  # short 2
    close = rig.submit(side=1, quantity=2, reduce_only=True)
    new = rig.submit(side=1, quantity=2, sl=9900, tp=10200)
    rig.fill(close, 2, 10000)
    rig.fill(new, 2, 10000)
    assert rig.om.position("ES") == 2
    assert all(leg.is_terminal for leg in rig.om.legs(old.order_id))
    live = [o for o in rig.om.open_orders() if o.parent_order_id]
    assert {o.parent_order_id for o in live} == {new.order_id}
    assert sorted(o.leaves for o in live) == [2, 2] and all(o.side == -1 for o in live)


def test_legs_never_cover_more_than_the_position() -> None:
    rig = Rig()
    entry = bracket(rig, quantity=3)
    part = rig.submit(side=-1, quantity=2, reduce_only=True)
    rig.fill(part, 2, 10050)  # the strategy trims to 1: legs shrink to 1 after the cancels
    live = [o for o in rig.om.legs(entry.order_id) if not o.is_terminal]
    assert sorted((o.role, o.leaves) for o in live) == [("stop_loss", 1), ("take_profit", 1)]


# ---- D6 and the execution boundary: fills by exec id, each applied once


def discrepancies(rig: Rig) -> list[ev.ExecutionDiscrepancy]:
    return [e for e in rig.events if isinstance(e, ev.ExecutionDiscrepancy)]


def record_discrepancies(rig: Rig) -> None:
    rig.bus.subscribe(ev.ExecutionDiscrepancy, rig.events.append, name="rec-disc")


def test_duplicate_exec_id_is_booked_once() -> None:
    rig = Rig()
    record_discrepancies(rig)
    order = rig.submit(quantity=2)
    rig.om.on_fill(order.client_order_id, "E-1", 1, 10000, D(0), "taker", 5)
    rig.om.on_fill(order.client_order_id, "E-1", 1, 10000, D(0), "taker", 6)
    assert order.filled == 1 and rig.om.position("ES") == 1
    assert rig.om.counters["duplicate_fills"] == 1
    assert [d.kind for d in discrepancies(rig)] == ["duplicate_fill"]
    fill = next(e for e in rig.events if isinstance(e, ev.Fill))
    assert fill.exec_id == "E-1"


def test_overfill_is_booked_and_reported() -> None:
    rig = Rig()
    record_discrepancies(rig)
    order = rig.submit(quantity=2)
    rig.fill(order, 1, 10000)
    rig.fill(order, 2, 10000)  # leaves is 1: the venue executed 2 anyway
    assert order.state is S.FILLED and order.filled == 3 and rig.om.position("ES") == 3
    assert [(d.kind, d.quantity) for d in discrepancies(rig)] == [("overfill", 2)]
    rig.fill(order, 1, 10000)  # and once more after FILLED
    assert order.state is S.FILLED and rig.om.position("ES") == 4
    assert [d.kind for d in discrepancies(rig)] == ["overfill", "overfill"]


def test_fill_after_confirmed_cancel_is_booked_and_state_stays_terminal() -> None:
    rig = Rig()
    record_discrepancies(rig)
    order = rig.submit(quantity=2)
    assert rig.om.cancel(order.order_id) and order.state is S.CANCELLED
    rig.fill(order, 2, 10000)
    assert order.state is S.CANCELLED and order.filled == 2 and rig.om.position("ES") == 2
    assert [(d.kind, d.quantity) for d in discrepancies(rig)] == [("late_fill", 2)]
    assert [type(e).__name__ for e in rig.events[-3:]] == ["Fill", "PositionUpdate",
                                                            "ExecutionDiscrepancy"]


def test_external_fill_is_booked_to_its_instrument() -> None:
    rig = Rig()
    record_discrepancies(rig)
    rig.om.on_fill("MANUAL-1", "E-9", 3, 10000, D("0.1"), "taker", 7, instrument_id="ES",
                   side=-1)
    rig.om.on_fill("MANUAL-1", "E-9", 3, 10000, D("0.1"), "taker", 8, instrument_id="ES",
                   side=-1)  # and its duplicate is ignored
    assert rig.om.position("ES") == -3
    assert [d.kind for d in discrepancies(rig)] == ["external_fill", "duplicate_fill"]
    fill = next(e for e in rig.events if isinstance(e, ev.Fill))
    assert fill.order_id == "" and fill.client_order_id == "MANUAL-1" and fill.side == -1


def test_external_fill_closing_a_bracketed_position_ends_the_bracket() -> None:
    rig = Rig()
    entry = bracket(rig)
    rig.om.on_fill("MANUAL-2", "E-7", 2, 10000, D(0), "taker", 9, instrument_id="ES", side=-1)
    assert rig.om.position("ES") == 0
    assert all(leg.is_terminal for leg in rig.om.legs(entry.order_id))


# ---- outcomes that never come, status reports, reconciliation, restart


class ReportingVenue(FakeVenue):
    """A fake venue that also answers status queries from what the test put there."""

    def __init__(self) -> None:
        super().__init__()
        self.confirm_cancels = False
        self.reports: dict[str, OrderStatusReport] = {}
        self.fill_reports: list[FillReport] = []
        self.position_reports: list[PositionReport] = []

    async def query_order(self, coid: str) -> OrderStatusReport | None:
        return self.reports.get(coid)

    async def fills_since(self, ts_ns: int) -> list[FillReport]:
        return [f for f in self.fill_reports if f.ts_ns >= ts_ns]

    async def positions(self) -> list[PositionReport]:
        return self.position_reports


def report(order: Order, status: str, filled: int = 0) -> OrderStatusReport:
    return OrderStatusReport(client_order_id=order.client_order_id, venue_order_id="V-1",
                             instrument_id="ES", side=order.side, quantity=order.quantity,
                             filled=filled, status=status, ts_ns=0)


def fill_report(order: Order, exec_id: str, qty: int, ts: int = 1_500) -> FillReport:
    return FillReport(exec_id=exec_id, client_order_id=order.client_order_id, instrument_id="ES",
                      side=order.side, quantity=qty, price=10000, fee=D(0), liquidity="taker",
                      ts_ns=ts)


def reporting_rig() -> tuple[Rig, ReportingVenue]:
    rig = Rig()
    venue = ReportingVenue()
    rig.venue = venue
    rig.om = OrderManager(rig.bus, rig.clock, rig.ids, {"ES": ES}, venue,
                          ack_timeout_ns=1_000)
    record_discrepancies(rig)
    return rig, venue


def test_missing_ack_is_overdue_then_resolved_by_query_never_resent() -> None:
    rig, venue = reporting_rig()
    order = rig.submit(quantity=2)
    assert rig.om.overdue(1_999) == [] and rig.om.overdue(2_000) == [order]
    rep = report(order, "partially_filled", 1)
    rig.om.apply_status_report(rep, 2_100, fills=[fill_report(order, "E-1", 1)])
    assert order.state is S.PARTIALLY_FILLED and order.filled == 1 and rig.om.position("ES") == 1
    assert len(venue.requests) == 1  # never a blind resend
    rig.fill(order, 1, 10000)  # the stream catches up
    assert order.state is S.FILLED and rig.om.overdue(10**9) == []


def test_order_absent_at_venue_is_rejected_with_a_discrepancy() -> None:
    rig, venue = reporting_rig()
    never = rig.submit(quantity=1)
    acked = rig.submit(quantity=1)
    rig.om.on_accepted(acked.client_order_id, "V-2", 1_100)
    rig.om.apply_status_report(None, 3_000, client_order_id=never.client_order_id)
    rig.om.apply_status_report(None, 3_000, client_order_id=acked.client_order_id)
    assert never.state is S.REJECTED and never.reason == "absent at venue"
    assert acked.state is S.EXPIRED and acked.reason == "absent at venue"
    assert [d.kind for d in discrepancies(rig)] == ["order_absent", "order_absent"]
    assert len(venue.requests) == 2


def test_stale_status_report_changes_nothing() -> None:
    rig, _ = reporting_rig()
    order = rig.submit(quantity=2)
    rig.fill(order, 1, 10000)
    rig.om.apply_status_report(report(order, "accepted", 0), 3_000)
    assert order.state is S.PARTIALLY_FILLED and order.filled == 1


def test_overdue_cancel_is_resolved_by_a_cancelled_report() -> None:
    rig, _ = reporting_rig()
    order = rig.submit(quantity=2)
    rig.om.on_accepted(order.client_order_id, "V", 1_000)
    rig.clock.advance_to(1_500)
    assert rig.om.cancel(order.order_id)
    assert rig.om.overdue(2_499) == [] and rig.om.overdue(2_500) == [order]
    rig.om.apply_status_report(report(order, "cancelled", 1), 2_600,
                               fills=[fill_report(order, "E-5", 1)])
    assert order.state is S.CANCELLED and order.filled == 1 and rig.om.position("ES") == 1
    rig.om.on_fill(order.client_order_id, "E-5", 1, 10000, D(0), "taker", 2_700)  # stream dup
    assert order.filled == 1 and rig.om.position("ES") == 1


def test_reconcile_books_missing_fills_resolves_orders_and_fixes_positions() -> None:
    import asyncio

    rig, venue = reporting_rig()
    a = rig.submit(quantity=2)
    b = rig.submit(quantity=1)
    rig.fill(a, 1, 10000)  # we have X-1; the venue also has E-2 for a and b filled
    venue.fill_reports = [fill_report(a, "X-1", 1), fill_report(a, "E-2", 1),
                          fill_report(b, "E-3", 1)]
    venue.reports = {a.client_order_id: report(a, "filled", 2),
                     b.client_order_id: report(b, "filled", 1)}
    venue.position_reports = [PositionReport(instrument_id="ES", quantity=5)]  # +2 unexplained
    done = asyncio.run(rig.om.reconcile(venue, 5_000))
    assert done == {"fills_booked": 2, "orders_queried": 0, "positions_adjusted": 1}
    assert a.state is S.FILLED and b.state is S.FILLED and a.filled == 2
    assert rig.om.position("ES") == 5
    assert [(d.kind, d.quantity) for d in discrepancies(rig)] == [("position_mismatch", 2)]
    assert asyncio.run(rig.om.reconcile(venue, 6_000))["fills_booked"] == 0  # idempotent


def test_restore_adopts_orders_positions_exec_ids_and_relinks_brackets() -> None:
    old = Rig()
    entry = bracket(old)
    state = RecoveredState(orders=dict(old.om.orders), positions=old.om.positions,
                           exec_ids={"X-1"}, last_ts_ns=2_000)
    rig = Rig()
    rig.om.restore(state)
    assert rig.om.position("ES") == 2
    assert {o.role for o in rig.om.legs(entry.order_id)} == {"stop_loss", "take_profit"}
    rig.om.on_fill(entry.client_order_id, "X-1", 2, 10000, D(0), "taker", 3_000)  # replayed
    assert rig.om.position("ES") == 2 and entry.filled == 2
    stop = rig.leg(entry, "stop_loss")
    rig.om.on_fill(stop.client_order_id, "X-9", 2, 9900, D(0), "taker", 3_100)
    # the restored bracket still works: one-cancels-other cancels the take-profit
    assert rig.om.position("ES") == 0 and rig.leg(entry, "take_profit", live=False).is_terminal
    with pytest.raises(RuntimeError, match="before any order"):
        rig.om.restore(state)


def test_connection_state_is_tracked() -> None:
    rig = Rig()
    rig.om.on_connection("disconnected", 5)
    assert not rig.om.connected
    rig.om.on_connection("connected", 6)
    assert rig.om.connected and rig.om.counters["connection_disconnected"] == 1


def test_ack_overtaken_by_its_fill_is_stale_news_not_a_conflict() -> None:
    rig = Rig()
    order = rig.submit(quantity=1)
    rig.fill(order, 1, 10000)
    rig.om.on_accepted(order.client_order_id, "V-7", 2_500)
    assert order.state is S.FILLED and order.venue_order_id == "V-7"
    assert rig.om.counters["late_acks"] == 1 and rig.om.counters["illegal_transitions"] == 0


def test_lost_cancel_is_forgotten_after_a_status_report_so_it_can_be_asked_again() -> None:
    rig, venue = reporting_rig()
    order = rig.submit(quantity=2)
    rig.om.on_accepted(order.client_order_id, "V", 1_000)
    assert rig.om.cancel(order.order_id) and not rig.om.cancel(order.order_id)
    assert rig.om.overdue(2_000) == [order]
    rig.om.apply_status_report(report(order, "accepted", 0), 2_000)
    assert order.cancel_requested_ns is None and rig.om.counters["cancels_lost"] == 1
    assert rig.om.cancel(order.order_id) and venue.cancels == [order.client_order_id] * 2


def test_a_reconciled_position_is_rebuilt_from_the_journal(tmp_path: Path) -> None:
    """The adjustment to the venue's position is journaled, so a restart rebuilds it (not the
    position from before the reconciliation)."""
    import asyncio

    from himari.daemon.orders.recovery import load_state

    journal = Journal(tmp_path / "journal.jsonl", fsync=False)
    rig = Rig(journal)
    venue = ReportingVenue()
    rig.venue = venue
    rig.om = OrderManager(rig.bus, rig.clock, rig.ids, {"ES": ES}, venue, journal)
    a = rig.submit(quantity=2)
    rig.fill(a, 2, 10000)
    venue.reports = {a.client_order_id: report(a, "filled", 2)}
    venue.position_reports = [PositionReport(instrument_id="ES", quantity=-1)]  # the truth
    asyncio.run(rig.om.reconcile(venue, 5_000))
    assert rig.om.position("ES") == -1
    journal.close()
    state = load_state(tmp_path, {"ES": ES})
    assert state.positions.quantity("ES") == -1
    assert state.positions.realized_pnl("ES") == rig.om.positions.realized_pnl("ES")


def test_the_streams_copy_of_a_fill_a_report_booked_first_is_no_discrepancy() -> None:
    # REST recovery racing the live stream (found by tests/e2e/test_paper_kill.py): the reconcile
    # books the fill, then the stream's own message for it arrives. Booked once, and quiet; a
    # further copy is a venue duplicate again.
    rig, _ = reporting_rig()
    order = rig.submit(quantity=2)
    rig.om.on_accepted(order.client_order_id, "V-1", 1_100)
    rig.om.apply_status_report(report(order, "partially_filled", 1), 2_000,
                               fills=[fill_report(order, "E-1", 1)])
    rig.om.on_fill(order.client_order_id, "E-1", 1, 10000, D(0), "taker", 2_100)  # the stream
    assert rig.om.position("ES") == 1 and order.filled == 1
    assert discrepancies(rig) == []
    assert rig.om.counters["fills_reported_before_streamed"] == 1
    rig.om.on_fill(order.client_order_id, "E-1", 1, 10000, D(0), "taker", 2_200)  # once more
    assert rig.om.position("ES") == 1
    assert [d.kind for d in discrepancies(rig)] == ["duplicate_fill"]
