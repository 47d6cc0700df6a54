"""The simulated execution client over the matching engine: marketable limits take (D2), slot
reuse inside a fill handler (D9), reduce-only, latency in both directions, exec ids and the
status queries."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import pytest

from himari.brokers.sim import plugin
from himari.brokers.sim.client import SimExecutionClient
from himari.brokers.sim.config import SimVenueConfig
from himari.daemon.clock import ReplayClock
from himari.daemon.configbase import ConfigError
from himari.daemon.events import TickBatch
from himari.daemon.instruments import Instrument
from himari.daemon.venue import OrderRequest

from .venue_drive import run_clocked

from .test_sim_venue import Recorder, req, run, trades

INST = Instrument(id="X", tick_size=Decimal("0.01"), multiplier=Decimal(10))
NO_FEES = {"taker_fee_bps": Decimal(0), "maker_fee_bps": Decimal(0)}


def client(clock: ReplayClock | None = None, **kw) -> tuple[SimExecutionClient, Recorder]:
    c = SimExecutionClient(SimVenueConfig(**kw), {"X": INST}, clock)
    rec = Recorder()
    c.set_listener(rec)
    return c, rec


# ---- D2: a marketable limit takes at the market; a resting limit is maker at its limit


def test_marketable_limit_fills_at_the_market_as_taker():
    c, rec = client(taker_fee_bps=Decimal("10"), maker_fee_bps=Decimal(0))
    c.submit(req("b", 1, 1, "limit", price=11_000))  # buy limit 110.00, market at 100.00
    run(c, trades([10_000, 10_000]))
    assert [(e[3], e[5]) for e in rec.fills()] == [(10_000, "taker")]
    assert rec.fills()[0][4] == Decimal("1.00000000")  # 1000.00 notional x 10 bps


def test_marketable_sell_limit_on_quotes_takes_the_bid():
    c, rec = client(**NO_FEES)
    c.submit(req("s", -1, 2, "limit", price=9_000))
    run(c, TickBatch.from_quotes("X", np.array([5]), np.array([10_000]), np.array([10_002])))
    assert [(e[2], e[3], e[5]) for e in rec.fills()] == [(2, 10_000, "taker")]


def test_limit_that_rested_is_maker_at_its_limit_when_crossed():
    c, rec = client(**NO_FEES)
    c.submit(req("b", 1, 1, "limit", price=10_000))
    run(c, trades([10_050, 10_020, 9_990], sz=[5, 5, 5]))
    assert [(e[3], e[5]) for e in rec.fills()] == [(10_000, "maker")]


def test_limit_placed_mid_batch_is_marketable_only_on_its_first_tick():
    c, rec = client(**NO_FEES)
    b = trades([10_050, 10_040, 9_900], ts=[0, 10, 20])
    c.submit(req("first", 1, 1, "limit", price=10_000, ts=5))  # sees 10_040 first: rests
    run(c, b)
    assert [(e[3], e[5]) for e in rec.fills()] == [(10_000, "maker")]


# ---- D9: a fill handler cancels one order and submits another on the same tick


class CancelAndReplace(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.venue: SimExecutionClient | None = None

    def on_fill(self, coid, exec_id, qty, price, fee, liquidity, ts, **kw):
        super().on_fill(coid, exec_id, qty, price, fee, liquidity, ts, **kw)
        if coid == "a" and self.venue is not None:
            self.venue.cancel("b", ts)  # b's slot is freed ...
            self.venue.submit(req("c", 1, 1, "limit", price=50, ts=ts))  # ... and reused by c


def test_cancel_and_submit_inside_a_fill_handler_never_executes_the_cancelled_order():
    c = SimExecutionClient(SimVenueConfig(**NO_FEES), {"X": INST})
    rec = CancelAndReplace()
    rec.venue = c
    c.set_listener(rec)
    c.submit(req("a", 1, 1))
    c.submit(req("b", 1, 1))  # both execute on the first tick; a's fill cancels b
    run(c, trades([100, 101]))
    assert [e[1] for e in rec.fills()] == ["a"]
    assert ("cancelled", "b", 0) in rec.events and c.working_orders() == 1  # c rests at 50


# ---- reduce_only


def test_reduce_only_is_refused_when_it_cannot_reduce():
    c, rec = client(**NO_FEES)
    c.submit(OrderRequest(client_order_id="r", instrument_id="X", side=-1, quantity=1,
                          order_type="market", price=None, time_in_force="gtc", ts_ns=0,
                          reduce_only=True))
    assert rec.events[0][0] == "rejected" and "reduce_only" in rec.events[0][2]


def test_reduce_only_is_clipped_to_the_position_and_the_rest_cancelled():
    c, rec = client(**NO_FEES)
    c.submit(req("long", 1, 2))
    run(c, trades([100]))
    for coid in ("x1", "x2"):  # two exits of 2 lots each for a position of 2
        c.submit(OrderRequest(client_order_id=coid, instrument_id="X", side=-1, quantity=2,
                              order_type="stop", price=90, time_in_force="gtc", ts_ns=1,
                              reduce_only=True))
    run(c, trades([80], ts=[100]))
    assert [(e[1], e[2]) for e in rec.fills()] == [("long", 2), ("x1", 2)]
    assert ("cancelled", "x2", 100) in rec.events and c.position("X") == 0


# ---- latency both ways, through the clock


def test_acks_and_fills_arrive_after_the_ack_latency():
    clock = ReplayClock(0)
    c, rec = client(clock, latency_ms=1.0, ack_latency_ms=2.0, **NO_FEES)
    c.submit(req("m", 1, 1, ts=0))
    assert rec.events == []  # nothing synchronous: the ack is on its way
    run_clocked(c, clock, trades([100, 101, 102], ts=[0, 1_000_000, 3_000_000]))
    # eligible at 1 ms (fills at the 1 ms tick); ack at 1 + 2 ms, fill seen at 1 + 2 ms
    assert rec.events[0] == ("accepted", "m", 3_000_000)
    assert rec.events[1][:4] == ("fill", "m", 1, 101) and rec.events[1][6] == 3_000_000


def test_cancel_reaches_the_venue_after_the_order_latency():
    clock = ReplayClock(0)
    c, rec = client(clock, latency_ms=1.0, **NO_FEES)
    c.submit(req("l", 1, 1, "limit", price=100, ts=0))
    c.cancel("l", 0)  # arrives at 1 ms, with the order: it never works
    run_clocked(c, clock, trades([101, 99], ts=[2_000_000, 3_000_000]))
    assert rec.fills() == [] and ("cancelled", "l", 1_000_000) in rec.events


def test_ack_latency_needs_a_clock():
    with pytest.raises(ConfigError, match="ack_latency_ms"):
        SimExecutionClient(SimVenueConfig(ack_latency_ms=1.0), {"X": INST})
    with pytest.raises(ConfigError, match="venue.params.ack_latency_ms"):
        SimVenueConfig(ack_latency_ms=-1)


def test_end_of_data_delivers_delayed_fills_so_reactions_fill_too():
    clock = ReplayClock(0)
    c = SimExecutionClient(SimVenueConfig(ack_latency_ms=1.0, **NO_FEES), {"X": INST}, clock)

    class Flip(Recorder):
        def on_fill(self, coid, exec_id, qty, price, fee, liquidity, ts, **kw):
            super().on_fill(coid, exec_id, qty, price, fee, liquidity, ts, **kw)
            if coid == "close":
                c.submit(req("open", -1, 1, ts=ts))

    rec = Flip()
    c.set_listener(rec)
    b = trades([100, 101])
    run_clocked(c, clock, b)
    c.submit(req("close", -1, 1, ts=20))
    c.end_of_data(b)
    assert [e[1] for e in rec.fills()] == ["close", "open"]


# ---- exec ids and status queries


def test_fills_carry_exec_ids_and_the_queries_answer_the_venue_truth():
    c, rec = client(taker_fee_bps=Decimal("10"))
    c.submit(req("a", 1, 3))
    c.submit(req("l", -1, 1, "limit", price=20_000))
    run(c, trades([10_000, 10_100]))
    assert rec.exec_ids == ["SIM-E-1"]
    a = asyncio.run(c.query_order("a"))
    assert a is not None and (a.status, a.filled, a.venue_order_id) == ("filled", 3, "SIM-1")
    assert asyncio.run(c.query_order("nope")) is None
    assert [o.client_order_id for o in asyncio.run(c.open_orders())] == ["l"]
    fills = asyncio.run(c.fills_since(0))
    assert [(f.exec_id, f.client_order_id, f.quantity, f.price) for f in fills] == [
        ("SIM-E-1", "a", 3, 10_000)]
    assert asyncio.run(c.fills_since(1)) == []
    assert [(p.instrument_id, p.quantity) for p in asyncio.run(c.positions())] == [("X", 3)]
    acct = asyncio.run(c.account())
    # bought 3 at 100.00 (x10 multiplier: 3000.00) with a 3.00 fee; last price 100.00
    assert acct.cash == Decimal("-3003.00") and acct.equity == Decimal("-3.00")
    assert c.connected


def test_plugin_builds_the_client_with_its_matching_engine():
    clock = ReplayClock(0)
    c = plugin.build(SimVenueConfig(), {"X": INST}, clock=clock)
    assert isinstance(c, SimExecutionClient) and c.clock is clock
    c.matching.warmup()
    assert plugin.CONFIG is SimVenueConfig
    assert isinstance(plugin.build(SimVenueConfig(), {"X": INST}), SimExecutionClient)


def test_flush_delivers_what_is_in_flight_and_news_never_precede_the_ack():
    clock = ReplayClock(0)
    c, rec = client(clock, latency_ms=1.0, ack_latency_ms=1.0, **NO_FEES)
    c.submit(req("l", 1, 1, "limit", price=50, ts=0))
    c.cancel("l", 0)  # reaches the venue at 1 ms, its answer 1 ms later
    assert rec.events == []
    c.flush()
    assert rec.events == [("accepted", "l", 2 * 1_000_000), ("cancelled", "l", 2 * 1_000_000)]
    c.submit(req("m", 1, 1, ts=2_000_000))
    c.end_of_data(trades([100], ts=[2_000_000]))  # fills m at once, before its ack is out
    kinds = [(e[0], e[1]) for e in rec.events]
    assert kinds[2:] == [("accepted", "m"), ("fill", "m")] and c.working_orders() == 0


def test_duplicate_client_order_id_is_rejected_and_the_original_keeps_its_status():
    c, rec = client(**NO_FEES)
    c.submit(req("a", 1, 1, "limit", price=50))
    c.submit(req("a", 1, 1, "limit", price=50))
    assert rec.events[-1][0] == "rejected" and "duplicate" in rec.events[-1][2]
    report = asyncio.run(c.query_order("a"))
    assert report is not None and report.status == "accepted" and c.working_orders() == 1
