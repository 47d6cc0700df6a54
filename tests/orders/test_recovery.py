"""Rebuilding orders, positions and booked execution ids from the journal.

The contract: whatever the order manager did, replaying its journal gives the same orders (state,
filled lots, notional, cancel requests), the same positions and the same fill count; a journal cut
anywhere (a crash) rebuilds exactly the prefix it holds; a venue execution id is booked once.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himari.daemon import events as ev
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.orders.journal import Journal, JournalCorrupt
from himari.daemon.orders.manager import OrderManager
from himari.daemon.orders.recovery import load_state, rebuild, resolve_in_flight
from himari.daemon.orders.state import OrderState
from himari.daemon.venue import CancelRequest, OrderRequest

D = Decimal
S = OrderState
ES = Instrument(id="ES", tick_size=D("0.25"), multiplier=D(50))


class ScriptVenue:
    """Accepts everything; the test drives fills and cancels through the listener."""

    def __init__(self) -> None:
        self.listener: Any = None
        self.cancels: list[str] = []

    def set_listener(self, listener: Any) -> None:
        self.listener = listener

    def submit(self, request: OrderRequest) -> None:
        pass

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        self.cancels.append(client_order_id)


def _manager(path: Path) -> tuple[OrderManager, ScriptVenue, Journal, ReplayClock]:
    journal = Journal(path, fsync=False)
    venue = ScriptVenue()
    clock = ReplayClock(1_000)
    om = OrderManager(Bus(), clock, IdSource("T"), {"ES": ES}, venue, journal)
    return om, venue, journal, clock


def _intent(n: int, side: int, qty: int, order_type: str = "market",
            price: int | None = None) -> ev.OrderIntent:
    return ev.OrderIntent(event_id=f"I-{n}", ts_ns=n, decision_id=f"D-{n}", strategy_id="s",
                          instrument_id="ES", side=side, quantity=qty, order_type=order_type,
                          price=price)


OPS = st.lists(st.tuples(st.sampled_from(["submit", "bracket", "accept", "fill", "cancel",
                                          "confirm_cancel", "reject"]),
                         st.integers(0, 50), st.integers(1, 4), st.integers(9_900, 10_100)),
               min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_rebuild_matches_what_the_manager_did(tmp_path_factory: pytest.TempPathFactory,
                                              ops: list[tuple[str, int, int, int]]) -> None:
    path = tmp_path_factory.mktemp("j") / "journal.jsonl"
    om, venue, journal, clock = _manager(path)
    n = 0
    for op, pick, qty, px in ops:
        n += 1
        clock.advance_to(1_000 + n * 10)
        working = [o for o in om.orders.values() if not o.is_terminal]
        target = working[pick % len(working)] if working else None
        if op == "submit":
            om.submit(_intent(n, 1 if pick % 2 else -1, qty), qty)
        elif op == "bracket":
            om.submit(_intent(n, 1, qty, "limit", px), qty, stop_loss=px - 50, take_profit=px + 50)
        elif target is None:
            continue
        elif op == "accept" and target.state is S.SUBMITTED:
            om.on_accepted(target.client_order_id, f"V-{n}", clock.now_ns())
        elif op == "fill":
            om.on_fill(target.client_order_id, f"X-{n}", min(qty, target.leaves), px, D("0.37"),
                       "taker", clock.now_ns())
        elif op == "cancel":
            om.cancel(target.order_id)
        elif op == "confirm_cancel":
            om.on_cancelled(target.client_order_id, "done", clock.now_ns())
        elif op == "reject" and target.state is S.SUBMITTED:
            om.on_rejected(target.client_order_id, "no", clock.now_ns())
    journal.close()

    state = load_state(path.parent)
    assert not state.cut and not state.anomalies
    assert set(state.orders) == set(om.orders)
    for oid, want in om.orders.items():
        got = state.orders[oid]
        assert (got.state, got.filled, got.notional, got.fees, got.cancel_requested_ns,
                got.side, got.quantity, got.order_type, got.price, got.role,
                got.parent_order_id, got.time_in_force, got.venue_order_id) == (
            want.state, want.filled, want.notional, want.fees, want.cancel_requested_ns,
            want.side, want.quantity, want.order_type, want.price, want.role,
            want.parent_order_id, want.time_in_force, want.venue_order_id), oid
        assert [s for s, _ in got.history] == [s for s, _ in want.history]
    assert state.positions.quantity("ES") == om.positions.quantity("ES")
    want_pos, got_pos = om.positions.get("ES"), state.positions.get("ES")
    if want_pos is not None and want_pos.fills:
        assert got_pos is not None
        assert (got_pos.realized, got_pos.cost, got_pos.fees) == (
            want_pos.realized, want_pos.cost, want_pos.fees)
    assert state.fills == om.counters.get("fills", 0)
    assert {o.order_id for o in state.in_flight()} == {o.order_id for o in om.open_orders()}


def _submitted(oid: str, cid: str, side: int = 1, qty: int = 3, ts: int = 10,
               parent: str = "", order_type: str = "market") -> ev.OrderSubmitted:
    return ev.OrderSubmitted(event_id=f"E-s{oid}", ts_ns=ts, order_id=oid, client_order_id=cid,
                             instrument_id="ES", side=side, quantity=qty, order_type=order_type,
                             parent_order_id=parent)


def _fill(oid: str, cid: str, qty: int, px: int, exec_id: str = "", side: int = 1,
          ts: int = 20, n: int = 1) -> ev.Fill:
    return ev.Fill(event_id=f"E-f{n}", ts_ns=ts, fill_id=f"F-{n}", order_id=oid,
                   client_order_id=cid, instrument_id="ES", side=side, quantity=qty, price=px,
                   fee=D("0.5"), exec_id=exec_id)


def test_a_fill_with_a_booked_exec_id_is_booked_once() -> None:
    recs = [_submitted("O-1", "C-x-1"), _fill("O-1", "C-x-1", 1, 100, "X-1", n=1),
            _fill("O-1", "C-x-1", 1, 100, "X-1", n=2), _fill("O-1", "C-x-1", 2, 101, "X-2", n=3)]
    state = rebuild(recs, {"ES": ES})
    assert state.fills == 2 and state.duplicate_fills == 1 and state.exec_ids == {"X-1", "X-2"}
    assert state.positions.quantity("ES") == 3 and state.orders["O-1"].state is S.FILLED
    assert state.orders["O-1"].notional == 100 + 2 * 101


def test_cancel_request_and_request_fields_and_in_flight() -> None:
    recs: list[Any] = [
        _submitted("O-1", "C-a-1"),
        OrderRequest(client_order_id="C-a-1", instrument_id="ES", side=1, quantity=3,
                     order_type="market", price=None, time_in_force="ioc", ts_ns=10,
                     reduce_only=True),
        CancelRequest(ts_ns=15, order_id="O-1", client_order_id="C-a-1", reason="stop"),
        # a request whose OrderSubmitted never reached the journal: it may be at the venue
        OrderRequest(client_order_id="C-a-2", instrument_id="ES", side=-1, quantity=1,
                     order_type="limit", price=99, time_in_force="gtc", ts_ns=16),
        ev.OrderRejected(event_id="E-r", ts_ns=17, order_id="O-3", client_order_id="C-a-3",
                         instrument_id="ES", reason="invalid: quantity"),
    ]
    state = rebuild(recs)  # no instruments given: minimal ones are made per id
    o1 = state.orders["O-1"]
    assert (o1.time_in_force, o1.reduce_only, o1.cancel_requested_ns) == ("ioc", True, 15)
    assert {o.client_order_id for o in state.in_flight()} == {"C-a-1", "C-a-2"}
    assert state.orders["O-3"].state is S.REJECTED
    assert state.sessions == {"a"}
    summary = state.summary()
    assert summary["orders"] == {"rejected": ["O-3"], "submitted": ["O-1", "C-a-2"]}
    assert summary["order_counts"] == {"rejected": 1, "submitted": 2}
    assert summary["counts"]["OrderRequest"] == 2 and summary["records"] == 5


def test_a_fill_the_order_cannot_take_is_still_booked_and_said() -> None:
    recs = [_submitted("O-1", "C-a-1", qty=1),
            ev.OrderCancelled(event_id="E-c", ts_ns=12, order_id="O-1", client_order_id="C-a-1",
                              instrument_id="ES"),
            _fill("O-1", "C-a-1", 1, 100, "X-1"),
            _fill("O-9", "C-a-9", 2, 100, "X-2", side=-1, n=2)]
    state = rebuild(recs, {"ES": ES})
    assert state.positions.quantity("ES") == -1  # the venue is the truth
    assert len(state.anomalies) == 2 and "illegal" in state.anomalies[0]
    assert "unknown order O-9" in state.anomalies[1]


def test_a_journal_cut_by_a_crash_rebuilds_its_prefix(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    recs = [_submitted("O-1", "C-a-1"), _fill("O-1", "C-a-1", 1, 100, "X-1", n=1),
            _fill("O-1", "C-a-1", 2, 104, "X-2", n=2)]
    with Journal(path, fsync=False) as j:
        for r in recs:
            j.write(r)
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])
    state = load_state(tmp_path)
    assert state.fills == 1 and state.positions.quantity("ES") == 1
    assert state.orders["O-1"].state is S.PARTIALLY_FILLED and len(state.cut) == 1
    path.write_bytes(b"0" + whole[1:])
    with pytest.raises(JournalCorrupt, match="line 1"):
        load_state(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path / "nothing")


def test_in_flight_orders_are_settled_against_the_venue_before_new_orders() -> None:
    from himari.daemon.venue import OrderStatusReport

    recs = [_submitted("O-1", "C-a-1"), _submitted("O-2", "C-a-2"), _submitted("O-3", "C-a-3"),
            _fill("O-3", "C-a-3", 1, 100, "X-1")]
    state = rebuild(recs, {"ES": ES})
    venue = [OrderStatusReport(client_order_id="C-a-2", venue_order_id="V-2", instrument_id="ES",
                               side=1, quantity=3, filled=0, status="accepted", ts_ns=30)]
    settle = resolve_in_flight(state, venue, IdSource("N"), ts_ns=40)
    assert [type(r).__name__ for r in settle] == ["ExecutionDiscrepancy", "OrderCancelled",
                                                  "OrderAccepted", "ExecutionDiscrepancy",
                                                  "OrderCancelled"]
    assert settle[0].kind == "order_absent" and settle[0].quantity == 3
    assert settle[3].quantity == 2  # O-3's leaves
    again = rebuild([*recs, *settle], {"ES": ES})
    assert [o.order_id for o in again.in_flight()] == ["O-2"]  # found, and now accepted
    assert again.orders["O-2"].venue_order_id == "V-2"
    assert again.orders["O-1"].state is S.CANCELLED and again.positions.quantity("ES") == 1
    assert not again.anomalies
