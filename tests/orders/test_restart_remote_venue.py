"""A restart against a remote broker (paper/live): in-flight orders stay in flight at start-up
and are settled by the session's reconciliation, which asks the broker about each one. Settling
them at start-up as "absent" (right for the in-process simulated exchange, which forgets
everything) declared orders the broker had filled while the daemon was down cancelled, and their
fills then rebuilt as anomalies ("event 'fill' is illegal in state 'cancelled'")."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from himari.daemon import events as ev
from himari.daemon import runtime
from himari.daemon.config import load_config
from himari.daemon.instruments import Instrument
from himari.daemon.orders.journal import Journal
from himari.daemon.orders.recovery import load_state, rebuild
from himari.daemon.orders.state import OrderState

ES = Instrument(id="ES", tick_size=Decimal("0.25"), multiplier=Decimal(50))


def _journal(state_dir: Path) -> ev.OrderSubmitted:
    sub = ev.OrderSubmitted(event_id="E-1", ts_ns=10, order_id="O-1", client_order_id="C-x-1",
                            instrument_id="ES", side=1, quantity=3, order_type="market")
    state_dir.mkdir()
    with Journal(state_dir / "journal.jsonl", fsync=False) as j:
        j.write(sub)
    return sub


def test_a_remote_venue_leaves_in_flight_orders_to_reconciliation(tmp_path: Path) -> None:
    sub = _journal(tmp_path / "s")
    prepared = runtime.prepare_state(tmp_path / "s", fsync=False, venue_orders=None)
    try:
        assert prepared.settled == 0
        assert [o.order_id for o in prepared.state.in_flight()] == ["O-1"]
    finally:
        prepared.release()
    after = load_state(tmp_path / "s")
    assert after.records == 1 and [o.order_id for o in after.in_flight()] == ["O-1"]
    # the broker's fill, booked by the reconciliation, rebuilds cleanly
    fill = ev.Fill(event_id="E-2", ts_ns=20, fill_id="F-1", order_id="O-1",
                   client_order_id="C-x-1", instrument_id="ES", side=1, quantity=3, price=100,
                   fee=Decimal(0), exec_id="X-1")
    state = rebuild([sub, fill], {"ES": ES})
    assert state.anomalies == [] and state.orders["O-1"].state is OrderState.FILLED


def test_the_simulated_venue_still_settles_in_flight_orders_as_absent(tmp_path: Path) -> None:
    _journal(tmp_path / "s")
    prepared = runtime.prepare_state(tmp_path / "s", fsync=False)
    prepared.release()
    after = load_state(tmp_path / "s")
    assert after.in_flight() == [] and after.orders["O-1"].state is OrderState.CANCELLED


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("venue", "expected"), [("sim", ()), ("alpaca", None)])
def test_run_main_settles_at_start_up_only_for_the_simulated_venue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, venue: str, expected: object) -> None:
    seen = {}

    def fake_prepare(path: Path, *, fsync: bool, venue_orders: object = ()) -> None:
        seen["venue_orders"] = venue_orders
        raise _Stop

    monkeypatch.setattr(runtime, "prepare_state", fake_prepare)
    cfg = load_config(None, [f'venue.name="{venue}"'])
    with pytest.raises(_Stop):
        runtime.run_main(cfg, [], tmp_path / "out", tmp_path / "s")
    assert seen["venue_orders"] == expected
