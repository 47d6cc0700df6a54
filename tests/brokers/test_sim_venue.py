"""The simulated venue: when and at what price orders execute, fees, rejects, cancels."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from himari.brokers.sim.config import SimVenueConfig
from himari.brokers.sim.venue import SimVenue
from himari.daemon.configbase import ConfigError
from himari.daemon.events import TickBatch
from himari.daemon.instruments import Instrument
from himari.daemon.venue import OrderRequest

INST = Instrument(id="X", tick_size=Decimal("0.01"), multiplier=Decimal(10))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.exec_ids: list[str] = []

    def on_accepted(self, coid, venue_id, ts):
        self.events.append(("accepted", coid, ts))

    def on_rejected(self, coid, reason, ts):
        self.events.append(("rejected", coid, reason))

    def on_fill(self, coid, exec_id, qty, price, fee, liquidity, ts, *, instrument_id="", side=0):
        self.events.append(("fill", coid, qty, price, fee, liquidity, ts))
        self.exec_ids.append(exec_id)

    def on_cancelled(self, coid, reason, ts):
        self.events.append(("cancelled", coid, ts))

    def on_expired(self, coid, reason, ts):
        self.events.append(("expired", coid, ts))

    def on_connection(self, state, ts):
        self.events.append(("connection", state, ts))

    def fills(self):
        return [e for e in self.events if e[0] == "fill"]


def venue(**kw) -> tuple[SimVenue, Recorder]:
    v = SimVenue(SimVenueConfig(**kw), {"X": INST})
    rec = Recorder()
    v.set_listener(rec)
    return v, rec


def req(coid, side, qty, otype="market", price=None, ts=0, tif="gtc") -> OrderRequest:
    return OrderRequest(client_order_id=coid, instrument_id="X", side=side, quantity=qty,
                        order_type=otype, price=price, time_in_force=tif, ts_ns=ts)


def run(v: SimVenue, batch: TickBatch) -> None:
    p = 0
    while p < len(batch):
        k = v.next_execution(batch, p, len(batch))
        if k >= len(batch):
            break
        v.execute_at(batch, k)
        p = k + 1


def trades(px, sz=None, ts=None) -> TickBatch:
    n = len(px)
    return TickBatch.from_trades("X", np.asarray(ts if ts is not None else np.arange(n) * 10),
                                 np.asarray(px), np.asarray(sz if sz is not None else [100] * n))


def test_market_order_fills_at_next_tick_with_slippage_and_taker_fee():
    v, rec = venue(slippage_ticks=2, taker_fee_bps=Decimal("10"))
    v.submit(req("c1", 1, 3))
    run(v, trades([10_000, 10_050]))
    # 3 lots at 100.02 (10002 ticks) x multiplier 10 = 3000.60 notional; 10 bps = 3.0006
    assert rec.fills() == [("fill", "c1", 3, 10_002, Decimal("3.00060000"), "taker", 0)]


def test_quotes_fill_buys_at_ask_and_sells_at_bid():
    v, rec = venue(taker_fee_bps=Decimal(0))
    v.submit(req("b", 1, 1))
    v.submit(req("s", -1, 1))
    q = TickBatch.from_quotes("X", np.array([5]), np.array([100]), np.array([103]))
    run(v, q)
    assert [(e[1], e[3]) for e in rec.fills()] == [("b", 103), ("s", 100)]


def test_latency_delays_eligibility():
    v, rec = venue(latency_ms=1.0)
    v.submit(req("c", 1, 1, ts=0))
    run(v, trades([100, 101, 102], ts=[0, 999_999, 1_000_000]))
    assert rec.fills()[0][3] == 102


def test_limit_fills_only_when_traded_through_and_partially_by_trade_size():
    v, rec = venue(maker_fee_bps=Decimal(0))
    v.submit(req("l", 1, 5, "limit", price=100))
    run(v, trades([101, 100, 99, 98], sz=[9, 9, 3, 7]))
    # 100 only touches the limit: no fill; 99 trades through (3 lots), then 98 (the last 2).
    assert [(e[2], e[3], e[5]) for e in rec.fills()] == [(3, 100, "maker"), (2, 100, "maker")]
    assert v.working_orders() == 0


def test_stop_triggers_and_fills_at_the_market():
    v, rec = venue(taker_fee_bps=Decimal(0))
    v.submit(req("st", -1, 2, "stop", price=95))
    run(v, trades([100, 96, 93, 90]))
    assert [(e[2], e[3]) for e in rec.fills()] == [(2, 93)]  # gapped through: worse than trigger


def test_cancel_removes_a_working_order():
    v, rec = venue()
    v.submit(req("l", 1, 1, "limit", price=50))
    v.cancel("l", 7)
    run(v, trades([10]))
    assert rec.fills() == [] and ("cancelled", "l", 7) in rec.events


@pytest.mark.parametrize("bad,reason", [
    (req("z", 1, 0), "quantity"),
    (req("z", 2, 1), "side"),
    (req("z", 1, 1, "limit"), "positive price"),
    (req("z", 1, 1, "iceberg"), "not supported"),
    (req("z", 1, 1, "limit", price=10, tif="ioc"), "time_in_force"),
])
def test_bad_requests_are_rejected_with_a_reason(bad, reason):
    v, rec = venue()
    v.submit(bad)
    assert rec.events[0][0] == "rejected" and reason in rec.events[0][2]
    assert v.working_orders() == 0


def test_end_of_data_fills_waiting_market_orders_at_the_last_tick():
    v, rec = venue(taker_fee_bps=Decimal(0))
    b = trades([100, 101])
    run(v, b)
    v.submit(req("m", -1, 1, ts=100))
    v.end_of_data(b)
    assert rec.fills()[0][3] == 101


def test_config_ranges_name_the_key():
    with pytest.raises(ConfigError, match="venue.params.latency_ms"):
        SimVenueConfig(latency_ms=-1)
