"""The order manager against the real simulated venue: a bracketed entry exits by one leg and the
other is cancelled; PnL and fees come out exactly."""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from himari.brokers.sim.config import SimVenueConfig
from himari.brokers.sim.venue import SimVenue
from himari.daemon.bus import Bus
from himari.daemon.clock import ReplayClock
from himari.daemon.events import Fill, OrderCancelled, OrderIntent, TickBatch
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.orders.manager import OrderManager

from .venue_drive import run_clocked

INST = Instrument(id="ES", tick_size=Decimal("0.25"), multiplier=Decimal(50))


def setup(**venue_cfg):
    bus, clock, ids = Bus(), ReplayClock(), IdSource()
    venue = SimVenue(SimVenueConfig(**venue_cfg), {"ES": INST})
    om = OrderManager(bus, clock, ids, {"ES": INST}, venue)
    seen: list = []
    bus.subscribe(Fill, seen.append, name="t.fill")
    bus.subscribe(OrderCancelled, seen.append, name="t.cancel")
    return bus, clock, venue, om, seen


def drive(venue: SimVenue, clock: ReplayClock, prices: list[int], sizes: list[int]) -> None:
    run_clocked(venue, clock, TickBatch.from_trades(
        "ES", np.arange(1, len(prices) + 1) * 1_000, np.array(prices), np.array(sizes)))


def intent(side: int, qty: int, stop: int, target: int) -> OrderIntent:
    return OrderIntent(event_id="I1", ts_ns=0, decision_id="D1", strategy_id="s",
                       instrument_id="ES", side=side, quantity=qty, stop_loss=stop,
                       take_profit=target)


def test_take_profit_exits_and_cancels_the_stop():
    _, clock, venue, om, seen = setup(taker_fee_bps=Decimal(0), maker_fee_bps=Decimal(0))
    om.submit(intent(1, 2, stop=19_980, target=20_020), 2, 19_980, 20_020)  # 4995.00 / 5005.00
    # entry at 5000.00; the target trades through at 5005.25 in two prints of 1 lot each
    drive(venue, clock, [20_000, 20_010, 20_021, 20_022], [5, 5, 1, 1])
    fills = [e for e in seen if isinstance(e, Fill)]
    assert [(f.side, f.quantity, f.price) for f in fills] == [(1, 2, 20_000), (-1, 1, 20_020),
                                                              (-1, 1, 20_020)]
    assert om.position("ES") == 0
    assert any(isinstance(e, OrderCancelled) for e in seen)  # the stop leg
    assert venue.working_orders() == 0
    # 2 lots x 20 ticks x 0.25 x 50 = 500.00
    assert om.positions.realized_pnl("ES") == Decimal("500.00")


def test_stop_exits_with_slippage_and_fees_exact():
    _, clock, venue, om, seen = setup(slippage_ticks=1, taker_fee_bps=Decimal("0.5"))
    om.submit(intent(-1, 1, stop=20_008, target=19_950), 1, 20_008, 19_950)
    drive(venue, clock, [20_000, 20_004, 20_012], [3, 3, 3])
    fills = [e for e in seen if isinstance(e, Fill)]
    # short entry at the bid less 1 tick slippage; the stop triggers at 20_012 and buys 1 worse
    assert [(f.side, f.price) for f in fills] == [(-1, 19_999), (1, 20_013)]
    assert om.position("ES") == 0 and venue.working_orders() == 0
    fee_in = Decimal("19999") * Decimal("0.25") * 50 * Decimal("0.5") / 10_000
    fee_out = Decimal("20013") * Decimal("0.25") * 50 * Decimal("0.5") / 10_000
    assert om.positions.fees("ES") == (fee_in + fee_out).quantize(Decimal("0.00000001"))
    assert om.positions.realized_pnl("ES") == Decimal(-14) * Decimal("0.25") * 50


MS = 1_000_000


def setup_clocked(**venue_cfg):
    """Manager and sim client sharing a replay clock, so acks and fills arrive late."""
    from himari.brokers.sim.client import SimExecutionClient

    bus, clock, ids = Bus(), ReplayClock(), IdSource()
    venue = SimExecutionClient(SimVenueConfig(**venue_cfg), {"ES": INST}, clock)
    om = OrderManager(bus, clock, ids, {"ES": INST}, venue)
    seen: list = []
    bus.subscribe(Fill, seen.append, name="t.fill")
    return clock, venue, om, seen


def drive_at(venue, clock: ReplayClock, ts: list[int], prices: list[int]) -> None:
    run_clocked(venue, clock, TickBatch.from_trades("ES", np.array(ts), np.array(prices),
                                                    np.array([9] * len(ts))))


def test_bracket_round_trip_with_latency_both_ways():
    clock, venue, om, seen = setup_clocked(latency_ms=1.0, ack_latency_ms=1.0,
                                           taker_fee_bps=Decimal(0))
    entry = om.submit(intent(1, 2, stop=19_980, target=20_020), 2, 19_980, 20_020)
    assert entry.state.value == "submitted"  # the ack is not synchronous any more
    # entry eligible at 1 ms and filled there; its fill arrives at 2 ms, the legs reach the
    # venue at 3 ms; the target trades through at 5 ms; that fill arrives at 6 ms
    drive_at(venue, clock, [1 * MS, 2 * MS, 4 * MS, 5 * MS, 7 * MS, 9 * MS],
             [20_000, 20_030, 20_010, 20_030, 20_010, 20_010])
    fills = [e for e in seen if isinstance(e, Fill)]
    assert [(f.side, f.quantity, f.price, f.ts_ns) for f in fills] == [
        (1, 2, 20_000, 2 * MS), (-1, 2, 20_020, 6 * MS)]
    assert [f.exec_id for f in fills] == ["SIM-E-1", "SIM-E-2"]
    assert entry.ts_of(entry.state.__class__.ACCEPTED) == 2 * MS
    assert om.position("ES") == 0 == venue.position("ES")
    assert venue.working_orders() == 0 and om.open_orders() == []


def test_strategy_exit_with_latency_leaves_no_stale_leg():
    clock, venue, om, seen = setup_clocked(latency_ms=1.0, ack_latency_ms=1.0,
                                           taker_fee_bps=Decimal(0))
    om.submit(intent(1, 1, stop=19_980, target=20_020), 1, 19_980, 20_020)
    drive_at(venue, clock, [1 * MS, 4 * MS], [20_000, 20_000])  # long 1, legs working
    assert len(om.open_orders()) == 2
    close = OrderIntent(event_id="I2", ts_ns=clock.now_ns(), decision_id="D2", strategy_id="s",
                        instrument_id="ES", side=-1, quantity=1, reduce_only=True)
    om.submit(close, 1)
    # the close fills at 5 ms; the legs' cancels reach the venue at 7 ms, but the stop triggers
    # at 6.5 ms first: reduce_only keeps it from opening a short
    drive_at(venue, clock, [5 * MS, int(6.5 * MS), 8 * MS, 9 * MS], [20_000, 19_970, 19_970,
                                                                      19_970])
    assert om.position("ES") == 0 == venue.position("ES")
    assert [f.side for f in seen if isinstance(f, Fill)] == [1, -1]
    assert om.open_orders() == [] and venue.working_orders() == 0
