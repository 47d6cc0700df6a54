"""Issue 12 items 3, 4, 5 and 7 through `RiskEngine.validate`: working orders count in the worst
case; exits are never refused for size, rate or the kill switch; the stale-data clock is the last
tick's time, not a bar's; the round-trip fee is per contract, not per lot."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np

from himari.daemon.events import Bar, OrderIntent, RiskVerdict, TickBatch
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.risk.config import RiskConfig
from himari.daemon.risk.engine import RiskEngine

SEC = 1_000_000_000
MES = Instrument(id="MES", tick_size=Decimal("0.25"), multiplier=Decimal(5))  # 1.25 per tick
LAST = 20_000


def engine(inst: Instrument = MES, **cfg: Any) -> RiskEngine:
    e = RiskEngine(RiskConfig(**cfg), inst, IdSource())
    e.on_tick_batch(TickBatch.from_trades(inst.id, np.array([0]), np.array([LAST]), np.array([1])))
    for i in range(14):  # ATR 8 ticks
        e.on_bar(bar(inst.id, i * SEC, LAST + 4, LAST - 4, LAST))
    return e


def bar(iid: str, ts: int, high: int, low: int, close: int) -> Bar:
    return Bar(event_id=f"B{ts}", ts_ns=ts, instrument_id=iid, spec="5m", ts_open=ts - 1,
               ts_close=ts, open=close, high=high, low=low, close=close, volume=1, n_ticks=1)


def intent(qty: int, side: int = 1, inst: str = "MES", **kw: Any) -> OrderIntent:
    return OrderIntent(event_id="OI-1", ts_ns=0, decision_id="D-1", strategy_id="s",
                       instrument_id=inst, side=side, quantity=qty, **kw)


def rule(v: RiskVerdict) -> str:
    assert not v.approved and v.quantity == 0
    return v.rule


def limit_buy(qty: int) -> OrderIntent:
    return intent(qty, order_type="limit", price=LAST - 10)


# ---------------------------------------------------------------- item 3: working orders

def test_working_orders_on_the_same_side_count_against_max_position() -> None:
    e = engine(max_position=Decimal(5))
    assert e.validate(limit_buy(5), 0, SEC).approved
    # the first buy of 5 rests: a second and a third would make a worst case of 10 and 15
    v = e.validate(limit_buy(5), 0, SEC, working_buy_lots=5)
    assert rule(v) == "max_position" and v.values == {"value": 10.0, "limit": 5.0}
    assert "5 lots working" in v.reason
    assert rule(e.validate(limit_buy(5), 0, SEC, working_buy_lots=10)) == "max_position"
    assert e.validate(limit_buy(2), 3, SEC, working_buy_lots=0).approved  # 3 + 2 = 5
    assert rule(e.validate(limit_buy(1), 3, SEC, working_buy_lots=2)) == "max_position"


def test_working_orders_on_the_other_side_do_not_use_up_room() -> None:
    e = engine(max_position=Decimal(5))
    # a working sell cannot make a buy's worst case worse
    assert e.validate(limit_buy(5), 0, SEC, working_sell_lots=5).approved
    v = e.validate(intent(4, side=-1), -2, SEC, working_buy_lots=9, working_sell_lots=0)
    assert rule(v) == "max_position" and v.values["value"] == 6.0
    assert e.validate(intent(3, side=-1), -2, SEC, working_buy_lots=9).approved


def test_working_orders_count_against_max_notional() -> None:
    # 1.25 per tick-lot: 5 lots x 20,000 ticks x 1.25 = 125,000
    e = engine(max_notional=Decimal(125_000), max_position=Decimal(100))
    assert e.validate(intent(5), 0, SEC).approved
    v = e.validate(intent(1), 0, SEC, working_buy_lots=5)
    assert rule(v) == "max_notional" and v.values["value"] == 6 * LAST * 1.25


def test_sizing_headroom_counts_working_orders() -> None:
    e = engine()  # max_position 10, max order 5
    assert e.validate(intent(0), 0, SEC).quantity == 5
    assert e.validate(intent(0), 0, SEC, working_buy_lots=7).quantity == 3
    assert e.validate(intent(0), 2, SEC, working_buy_lots=6).quantity == 2
    assert rule(e.validate(intent(0), 0, SEC, working_buy_lots=10)) == "no_headroom"
    assert e.validate(intent(0, side=-1), 0, SEC, working_buy_lots=10).quantity == 5


# ---------------------------------------------------------------- item 4: exits always pass

def test_an_exit_larger_than_max_order_quantity_passes() -> None:
    e = engine(max_order_quantity=Decimal(5), max_position=Decimal(20))
    assert e.validate(intent(12, side=-1), 12, SEC).approved  # flatten 12 in one order
    assert e.validate(intent(12, side=1, reduce_only=True), -12, SEC).approved
    assert e.validate(intent(7, side=-1), 12, SEC).approved  # partial exit
    assert rule(e.validate(intent(13, side=-1), 12, SEC)) == "max_order_qty"  # flips: an entry
    assert rule(e.validate(intent(6), 12, SEC)) == "max_order_qty"


def test_exits_are_not_refused_by_the_order_rate() -> None:
    e = engine(max_orders_per_minute=2)
    assert e.validate(intent(1), 0, 0).approved
    assert e.validate(intent(1), 1, SEC).approved
    assert rule(e.validate(intent(1), 2, 2 * SEC)) == "order_rate"
    assert e.validate(intent(2, side=-1), 2, 2 * SEC).approved
    assert e.validate(intent(1, side=-1, reduce_only=True), 2, 2 * SEC).approved
    # exits are recorded in the window: entries still wait for it to slide
    assert rule(e.validate(intent(1), 0, 60 * SEC)) == "order_rate"


def test_halted_daemon_flattens_whatever_the_size_and_rate() -> None:
    e = engine(max_order_quantity=Decimal(5), max_position=Decimal(20), max_orders_per_minute=1)
    assert e.validate(intent(1), 0, 0).approved  # fills the rate window
    e.halt("operator")
    v = e.validate(intent(15, side=-1, reduce_only=True), 15, SEC)
    assert v.approved and v.quantity == 15
    assert e.validate(intent(15, side=1), -15, SEC).approved
    assert rule(e.validate(intent(16, side=-1), 15, SEC)) == "kill_switch"
    assert rule(e.validate(intent(1), 0, SEC)) == "kill_switch"


# ---------------------------------------------------------------- item 5: stale data

def test_stale_after_stale_data_s_without_ticks_even_if_bars_are_recent() -> None:
    e = RiskEngine(RiskConfig(stale_data_s=5.0), MES, IdSource())
    e.on_tick_batch(TickBatch.from_trades("MES", np.array([0]), np.array([LAST]), np.array([1])))
    for t in range(1, 11):  # bars keep closing (as the runner feeds them) but no tick arrives
        b = bar("MES", t * SEC, LAST + 4, LAST - 4, LAST + t)
        e.on_bar(b)
        e.on_trade_price(b.close, b.ts_ns)
    v = e.validate(intent(1), 0, 10 * SEC)
    assert rule(v) == "stale_data" and v.values == {"value": 10.0, "limit": 5.0}
    assert "last tick is 10.000 s old" in v.reason
    assert e.last_tick == (LAST + 10, 0)  # the bar close is the reference price; the clock is not
    assert e.validate(intent(1, side=-1), 1, 10 * SEC).approved  # exits pass stale data


def test_fresh_when_ticks_are_recent() -> None:
    e = RiskEngine(RiskConfig(stale_data_s=5.0), MES, IdSource())
    e.on_last_tick(LAST, 6 * SEC)
    assert e.validate(intent(1), 0, 11 * SEC).approved  # exactly 5 s: allowed
    assert rule(e.validate(intent(1), 0, 11 * SEC + 1)) == "stale_data"
    batch = TickBatch.from_trades("MES", np.array([7, 9, 12]) * SEC,
                                  np.array([LAST, LAST + 1, LAST + 2]), np.array([1, 1, 1]))
    e.on_tick_batch(batch, stop=2)  # the runner saw ticks up to index 1 before the event
    assert e.last_tick == (LAST + 1, 9 * SEC)
    assert e.validate(intent(1), 0, 14 * SEC).approved
    e.on_tick_batch(batch)
    assert e.last_tick == (LAST + 2, 12 * SEC)
    e.on_tick_batch(TickBatch.from_trades("ES", np.array([99 * SEC]), np.array([1]),
                                          np.array([1])))
    assert e.last_tick == (LAST + 2, 12 * SEC)  # another instrument's ticks are ignored


# ---------------------------------------------------------------- item 7: fee per contract

BTC = Instrument(id="BTC", tick_size=Decimal("0.1"), lot_size=Decimal("1e-7"))


def test_round_trip_fee_is_per_contract_not_per_lot() -> None:
    big = dict(max_order_quantity=Decimal(1000), max_position=Decimal(1000),
               max_notional=Decimal(10**9))
    e = engine(BTC, round_trip_fee=Decimal(2), **big)  # price 2,000.0: ATR 8 ticks, stop 12
    v = e.validate(intent(0, inst="BTC"), 0, SEC)
    # f = 0.02 of 100,000 = 2,000 at risk; per BTC: 12 ticks x 0.1 = 1.2 of stop + 2 of fees
    btc = BTC.lots_to_qty(v.quantity)
    assert v.approved and abs(btc - Decimal(2000) / Decimal("3.2")) < Decimal("1e-6")  # 625 BTC
    # the old per-lot reading charged 2 per 1e-7 BTC: 2,000 / 2 = 1,000 lots = 0.0001 BTC
    no_fee = engine(BTC, **big).validate(intent(0, inst="BTC"), 0, SEC)
    assert BTC.lots_to_qty(no_fee.quantity) == 1000  # 2000 / 1.2 = 1666.67 BTC, capped


def test_fee_per_contract_on_a_point_value_contract() -> None:
    big = dict(max_order_quantity=Decimal(1000), max_position=Decimal(1000),
               max_notional=Decimal(10**9))
    # MES: lot = 1 contract; 12-tick stop x 1.25 = 15 + fee 5 per contract = 20 -> 2000 / 20
    assert engine(round_trip_fee=Decimal(5), **big).validate(intent(0), 0, SEC).quantity == 100
