"""RiskEngine: config, every rule through `validate`, kill switch, daily reset, rate window, sizing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from himari.daemon.configbase import ConfigError
from himari.daemon.events import Bar, OrderIntent, RiskVerdict, TickBatch
from himari.daemon.ids import IdSource
from himari.daemon.feeds.values import infer_step, to_grid
from himari.daemon.instruments import Instrument
from himari.daemon.risk.config import RiskConfig, pct_to_ppm
from himari.daemon.risk.engine import NS_PER_DAY, RiskEngine

from .test_sizing import ref_atr

SEC = 1_000_000_000
MES = Instrument(id="MES", tick_size=Decimal("0.25"), multiplier=Decimal(5))  # 1.25 per tick
ES = Instrument(id="ES", tick_size=Decimal("0.25"), multiplier=Decimal(50))  # 12.5 per tick
LAST = 20_000  # 5000.00
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def engine(inst: Instrument = MES, atr: bool = True, **cfg: Any) -> RiskEngine:
    e = RiskEngine(RiskConfig(**cfg), inst, IdSource())
    e.on_last_tick(LAST, 0)
    if atr:  # 14 bars of range 8 ticks -> ATR 8
        for i in range(14):
            e.on_bar(bar(inst.id, i, LAST + 4, LAST - 4, LAST))
    return e


def bar(iid: str, i: int, high: int, low: int, close: int, spec: str = "5m") -> Bar:
    return Bar(event_id=f"B{i}", ts_ns=i, instrument_id=iid, spec=spec, ts_open=i, ts_close=i,
               open=close, high=high, low=low, close=close, volume=1, n_ticks=1)


def intent(qty: int = 1, side: int = 1, inst: str = "MES", **kw: Any) -> OrderIntent:
    return OrderIntent(event_id="OI-1", ts_ns=0, decision_id="D-1", strategy_id="s",
                       instrument_id=inst, side=side, quantity=qty, **kw)


def rule(v: RiskVerdict) -> str:
    assert not v.approved and v.quantity == 0
    return v.rule


# ---------------------------------------------------------------- config

def test_config_defaults_follow_the_spec() -> None:
    c = RiskConfig()
    assert (c.max_position, c.max_order_quantity, c.max_notional) == (10, 5, Decimal(500000))
    assert (c.price_collar_pct, c.max_orders_per_minute, c.daily_loss_limit_pct) == (5.0, 60, 2.0)
    assert (c.max_drawdown_pct, c.kelly_fraction, c.per_trade_risk_pct) == (5.0, 0.25, 2.0)
    assert (c.stop_atr_mult, c.target_atr_mult, c.atr_period) == (1.5, 3.0, 14)
    assert (c.stale_data_s, c.starting_equity, c.bracket_fixed_size) == (0.0, Decimal(100000), False)
    assert c.atr_bar_spec == "5m" and c.round_trip_fee == Decimal(0)
    assert pct_to_ppm(2.0) == 20_000 and pct_to_ppm(0.0001) == 1


@pytest.mark.parametrize("key,value", [
    ("max_position", 0), ("max_order_quantity", -1), ("max_notional", Decimal(0)),
    ("price_collar_pct", 0.0), ("max_orders_per_minute", 0), ("daily_loss_limit_pct", 101.0),
    ("max_drawdown_pct", float("nan")), ("kelly_fraction", 1.5), ("per_trade_risk_pct", 0.0),
    ("stop_atr_mult", 3.5), ("target_atr_mult", 0.5), ("atr_period", 0), ("stale_data_s", -1.0),
    ("starting_equity", Decimal("-1")), ("round_trip_fee", Decimal("NaN")),
    ("kelly_window_trades", 10),
])
def test_config_range_errors_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        RiskConfig(**{key: value})
    assert err.value.key == f"risk.{key}"


def test_config_decoding() -> None:
    c = msgspec.convert({"max_notional": "250000.5", "starting_equity": 50000}, RiskConfig)
    assert c.max_notional == Decimal("250000.5") and c.starting_equity == Decimal(50000)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_lots": 3}, RiskConfig)


# ---------------------------------------------------------------- approvals and verdicts

def test_approved_fixed_size_verdict() -> None:
    e = engine()
    e.warmup()
    v = e.validate(intent(3), 0, SEC)
    assert v.approved and v.quantity == 3 and v.rule == "" and v.values == {}
    assert (v.event_id, v.intent_id, v.decision_id, v.ts_ns) == ("RV-R-1", "OI-1", "D-1", SEC)
    assert v.stop_loss is None and v.take_profit is None  # default: no bracket for fixed size
    assert e.validate(intent(1), 0, SEC).event_id == "RV-R-2"
    assert type(msgspec.json.decode(msgspec.json.encode(v))["quantity"]) is int


def test_counters() -> None:
    e = engine()
    e.validate(intent(1), 0, SEC)
    e.validate(intent(9), 0, SEC)
    e.validate(intent(9), 0, SEC)
    e.validate(intent(1, inst="ES"), 0, SEC)
    assert (e.checked, e.approved) == (4, 1)
    assert e.rejected == {"max_order_qty": 2, "instrument": 1}


def test_bad_requests() -> None:
    e = engine()
    assert rule(e.validate(intent(1, order_type="iceberg"), 0, SEC)) == "invalid_order"
    assert rule(e.validate(intent(1, order_type="limit"), 0, SEC)) == "invalid_order"  # no price
    assert rule(e.validate(intent(1, side=0), 0, SEC)) == "invalid_order"
    assert rule(e.validate(intent(1, reduce_only=True), 0, SEC)) == "reduce_only"
    assert e.validate(intent(1, side=-1, reduce_only=True), 2, SEC).approved


def test_no_market_data_before_the_first_trade() -> None:
    e = RiskEngine(RiskConfig(), MES, IdSource())
    assert rule(e.validate(intent(1, order_type="limit", price=LAST), 0, SEC)) == "no_market_data"
    e.on_tick_batch(TickBatch.from_trades("MES", np.array([5]), np.array([LAST]), np.array([1])))
    assert e.validate(intent(1, order_type="limit", price=LAST), 0, SEC).approved


# ---------------------------------------------------------------- each limit through validate

def test_max_order_and_position_boundaries() -> None:
    e = engine()
    assert e.validate(intent(5), 0, SEC).approved
    v = e.validate(intent(6), 0, SEC)
    assert rule(v) == "max_order_qty" and v.values == {"value": 6.0, "limit": 5.0}
    assert "6" in v.reason and "5" in v.reason
    assert e.validate(intent(2), 8, SEC).approved
    v = e.validate(intent(3), 8, SEC)
    assert rule(v) == "max_position" and v.values == {"value": 11.0, "limit": 10.0}
    assert "11" in v.reason and "10" in v.reason
    assert e.validate(intent(3, side=-1), 11, SEC).approved  # reducing an over-limit position


def test_max_notional_exact_in_ticks() -> None:
    e = engine(ES)  # 1 lot at 20,000 ticks = 250,000
    assert e.validate(intent(2, inst="ES"), 0, SEC).approved  # 500,000: at the limit
    v = e.validate(intent(1, inst="ES"), 2, SEC)
    assert rule(v) == "max_notional" and v.values == {"value": 750_000.0, "limit": 500_000.0}
    v = e.validate(intent(2, inst="ES", order_type="limit", price=LAST + 1), 0, SEC)
    assert rule(v) == "max_notional"
    assert e.validate(intent(1, side=-1, inst="ES"), 3, SEC).approved  # reduces


def test_price_collar() -> None:
    e = engine()  # 5 % of 20,000 = 1,000 ticks
    assert e.validate(intent(1, order_type="limit", price=LAST + 1_000), 0, SEC).approved
    assert e.validate(intent(1, side=-1, order_type="stop", price=LAST - 1_000), 0, SEC).approved
    v = e.validate(intent(1, order_type="limit", price=LAST + 1_001), 0, SEC)
    assert rule(v) == "price_collar" and v.values["limit"] == 5.0
    assert rule(e.validate(intent(1, order_type="stop", price=LAST - 1_001), 0, SEC)) == \
        "price_collar"


def test_stale_data_refuses_entries_only() -> None:
    e = engine(stale_data_s=5.0)
    assert e.validate(intent(1), 0, 5 * SEC).approved
    assert rule(e.validate(intent(1), 0, 5 * SEC + 1)) == "stale_data"
    assert e.validate(intent(1, side=-1), 1, 5 * SEC + 1).approved
    e.on_last_tick(LAST, 5 * SEC)
    assert e.validate(intent(1), 0, 6 * SEC).approved


def test_rate_limit_window_counts_approved_orders_only() -> None:
    e = engine(max_orders_per_minute=3)
    for t in (0, 10, 20):
        assert e.validate(intent(1), 0, t * SEC).approved
    v = e.validate(intent(1), 0, 30 * SEC)
    assert rule(v) == "order_rate" and v.values == {"value": 3.0, "limit": 3.0}
    assert rule(e.validate(intent(1), 0, 60 * SEC - 1)) == "order_rate"
    assert e.validate(intent(1), 0, 60 * SEC).approved  # the order at 0 s left the window
    assert rule(e.validate(intent(1), 0, 60 * SEC)) == "order_rate"
    # rejections by other rules do not use up the window
    e2 = engine(max_orders_per_minute=1)
    assert rule(e2.validate(intent(9), 0, 0)) == "max_order_qty"
    assert e2.validate(intent(1), 0, 0).approved


# ---------------------------------------------------------------- daily loss and kill switch

def test_daily_loss_blocks_entries_until_the_next_utc_day() -> None:
    e = engine()
    t = 10 * SEC
    e.on_equity(Decimal("98000.000001"), t)  # just under 2 %
    assert e.validate(intent(1), 0, t).approved
    e.on_equity(Decimal("98000"), t)  # exactly 2 %
    v = e.validate(intent(1), 0, t)
    assert rule(v) == "daily_loss" and v.values["value"] == pytest.approx(2.0)
    assert "2" in v.reason and "100000" in v.reason
    assert e.validate(intent(1, side=-1), 1, t).approved  # reducing passes
    assert not e.halted  # a daily stop, not the kill switch
    assert rule(e.validate(intent(1), 0, NS_PER_DAY - 1)) == "daily_loss"
    assert e.validate(intent(1), 0, NS_PER_DAY).approved  # new UTC day: start = 98,000
    assert e.snapshot()["day_start_equity"] == "98000"
    e.on_equity(Decimal("96040"), NS_PER_DAY + SEC)  # 2 % of 98,000
    assert rule(e.validate(intent(1), 0, NS_PER_DAY + SEC)) == "daily_loss"


def test_new_day_starts_from_the_first_equity_update_of_that_day() -> None:
    e = engine()
    e.on_equity(Decimal("97000"), NS_PER_DAY - 1)
    e.on_equity(Decimal("97500"), NS_PER_DAY + 5)
    assert e.daily_loss_pct == 0.0 and e.validate(intent(1), 0, NS_PER_DAY + 6).approved


def test_drawdown_trips_the_kill_switch_and_it_stays_tripped() -> None:
    e = engine(daily_loss_limit_pct=50.0)
    e.on_equity(Decimal("110000"), SEC)  # new high-water mark
    e.on_equity(Decimal("104500.01"), 2 * SEC)  # 4.99999 %
    assert not e.halted
    e.on_equity(Decimal("104500"), 3 * SEC)  # 5 % of 110,000
    assert e.halted and "max_drawdown" in e.halt_reason
    v = e.validate(intent(1), 0, 4 * SEC)
    assert rule(v) == "kill_switch" and "max_drawdown" in v.reason
    assert e.validate(intent(2, side=-1), 2, 4 * SEC).approved  # reducing passes
    assert e.validate(intent(2, side=1), -3, 4 * SEC).approved
    assert rule(e.validate(intent(4, side=-1), 2, 4 * SEC)) == "kill_switch"  # would flip
    e.on_equity(Decimal("120000"), 5 * SEC)  # recovery does not resume
    assert e.halted and rule(e.validate(intent(1), 0, 6 * SEC)) == "kill_switch"
    e.resume()
    assert not e.halted and e.validate(intent(1), 0, 7 * SEC).approved
    assert e.snapshot()["peak_equity"] == "120000"


def test_resume_rebases_the_high_water_mark() -> None:
    e = engine(daily_loss_limit_pct=50.0)
    e.on_equity(Decimal("94000"), SEC)
    assert e.halted
    e.resume()
    assert e.validate(intent(1), 0, 2 * SEC).approved  # 6 % below the old peak, not re-tripped
    e.on_equity(Decimal("89300"), 3 * SEC)  # 5 % below 94,000
    assert e.halted


def test_manual_halt_is_idempotent_and_blocks_sized_entries() -> None:
    e = engine()
    e.halt("operator: SIGUSR1")
    e.halt("second reason")
    assert e.halted and e.halt_reason == "operator: SIGUSR1"
    assert rule(e.validate(intent(0), 0, SEC)) == "kill_switch"
    assert e.validate(intent(1, side=-1, reduce_only=True), 1, SEC).approved
    e.resume()
    assert e.validate(intent(0), 0, SEC).approved


# ---------------------------------------------------------------- sizing through validate

def test_sized_entry_needs_an_atr() -> None:
    e = engine(atr=False)
    for i in range(13):
        e.on_bar(bar("MES", i, LAST + 4, LAST - 4, LAST))
    assert rule(e.validate(intent(0), 0, SEC)) == "no_atr"
    e.on_bar(bar("MES", 13, LAST + 4, LAST - 4, LAST))
    assert e.atr_ticks == 8.0 and e.validate(intent(0), 0, SEC).approved


def test_sized_entry_plans_the_bracket_and_caps_the_size() -> None:
    e = engine()  # ATR 8: stop 12 ticks, target 24; f = 0.02 -> 2000 / 15 = 133 -> cap 5
    v = e.validate(intent(0), 0, SEC)
    assert (v.approved, v.quantity, v.stop_loss, v.take_profit) == (True, 5, LAST - 12, LAST + 24)
    v = e.validate(intent(0, side=-1), 0, SEC)
    assert (v.quantity, v.stop_loss, v.take_profit) == (5, LAST + 12, LAST - 24)
    assert e.validate(intent(0), 7, SEC).quantity == 3  # max_position headroom
    assert engine(ES).validate(intent(0, inst="ES"), 0, SEC).quantity == 2  # notional headroom
    assert rule(e.validate(intent(0), 10, SEC)) == "no_headroom"


def test_sized_entry_uses_the_kelly_budget() -> None:
    big = dict(max_order_quantity=1000, max_position=1000, max_notional=Decimal(10**9))
    e = engine(**big)
    assert e.validate(intent(0), 0, SEC).quantity == 133  # floor(2000 / 15)
    e2 = engine(round_trip_fee=Decimal("5"), **big)
    assert e2.validate(intent(0), 0, SEC).quantity == 100  # floor(2000 / 20)
    e.set_regime(vol_percentile=1.0)  # stop 18 ticks: floor(2000 / 22.5) = 88
    v = e.validate(intent(0), 0, SEC)
    assert (v.quantity, v.stop_loss, v.take_profit) == (88, LAST - 18, LAST + 24)
    e.set_regime(vol_percentile=0.0, sigma_base=0.01, sigma_now=0.04)  # ratio 0.25
    # f = min(0.25 x 0.25 x 0.25, 0.02) = 0.015625 -> floor(1562.5 / 15) = 104
    assert e.validate(intent(0), 0, SEC).quantity == 104


def test_intent_levels_replace_the_plan_and_drive_the_size() -> None:
    big = dict(max_order_quantity=1000, max_position=1000, max_notional=Decimal(10**9))
    e = engine(**big)
    v = e.validate(intent(0, stop_loss=LAST - 100, take_profit=LAST + 300), 0, SEC)
    assert (v.quantity, v.stop_loss, v.take_profit) == (16, LAST - 100, LAST + 300)  # 2000/125
    assert rule(e.validate(intent(0, stop_loss=LAST + 1), 0, SEC)) == "invalid_order"
    assert rule(e.validate(intent(0, take_profit=LAST - 1), 0, SEC)) == "invalid_order"
    assert rule(e.validate(intent(0, side=-1, stop_loss=LAST - 1), 0, SEC)) == "invalid_order"
    assert rule(e.validate(intent(0, reduce_only=True), 0, SEC)) == "invalid_order"


def test_no_edge_after_a_losing_record() -> None:
    e = engine()
    for _ in range(40):
        e.on_trade_closed(Decimal("-100"))
    v = e.validate(intent(0), 0, SEC)
    assert rule(v) == "no_edge" and v.values["value"] < 0 and "40" in v.reason
    assert e.validate(intent(1), 0, SEC).approved  # fixed-size intents are not Kelly-gated
    for _ in range(100):  # the window keeps the last 100: all winners now
        e.on_trade_closed(Decimal("150"))
    assert e.validate(intent(0), 0, SEC).approved


def test_risk_budget_too_small() -> None:
    e = engine(ES, starting_equity=Decimal("5000"))  # 100 < 12 x 12.5
    assert rule(e.validate(intent(0, inst="ES"), 0, SEC)) == "risk_budget"


def test_sized_entries_still_pass_every_check() -> None:
    e = engine(max_orders_per_minute=1)
    assert e.validate(intent(0), 0, 0).approved
    assert rule(e.validate(intent(0), 0, SEC)) == "order_rate"
    assert rule(e.validate(intent(0, order_type="limit", price=LAST * 2), 0, 99 * SEC)) == \
        "price_collar"


def test_bracket_for_fixed_size_only_when_configured() -> None:
    e = engine(bracket_fixed_size=True)
    v = e.validate(intent(2), 0, SEC)
    assert (v.quantity, v.stop_loss, v.take_profit) == (2, LAST - 12, LAST + 24)
    assert e.validate(intent(2, stop_loss=LAST - 50), 0, SEC).stop_loss is None  # intent's own
    assert e.validate(intent(1, side=-1), 2, SEC).stop_loss is None  # reducing
    assert rule(engine(atr=False, bracket_fixed_size=True).validate(intent(2), 0, SEC)) == "no_atr"


def test_on_bar_filters_instrument_and_spec() -> None:
    e = engine(atr=False)  # default atr_bar_spec "5m" (spec 1.3)
    for i in range(14):
        e.on_bar(bar("ES", i, LAST + 4, LAST - 4, LAST))
        e.on_bar(bar("MES", i, LAST + 40, LAST - 40, LAST, spec="30m"))
    assert np.isnan(e.atr_ticks)
    for i in range(14):
        e.on_bar(bar("MES", i, LAST + 4, LAST - 4, LAST))
    assert e.atr_ticks == 8.0
    any_spec = engine(atr=False, atr_bar_spec="")
    for i in range(14):
        any_spec.on_bar(bar("MES", i, LAST + 40, LAST - 40, LAST, spec="250t"))
    assert any_spec.atr_ticks == 80.0


# ---------------------------------------------------------------- real data

def test_atr_and_bracket_on_real_btc_bars() -> None:
    path = DATA / "btc-perp-20211231-20220201_1m.csv"
    if not path.exists():
        pytest.skip(f"real market data not found at {path}")
    raw = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=(1, 2, 3, 4),
                        max_rows=3000)
    tick, exact = infer_step(raw.ravel())
    assert exact
    inst = Instrument(id="BTC-PERP", tick_size=tick)
    ticks, ok = to_grid(raw, tick)
    assert ok.all()
    # 1-minute rows -> 5-minute bars (high max, low min, last close)
    t5 = ticks[: len(ticks) // 5 * 5].reshape(-1, 5, 4)
    highs, lows, closes = t5[:, :, 1].max(1), t5[:, :, 2].min(1), t5[:, :, 3][:, -1]
    e = RiskEngine(RiskConfig(), inst, IdSource())
    for i in range(len(closes)):
        e.on_bar(bar(inst.id, i, int(highs[i]), int(lows[i]), int(closes[i])))
    want = ref_atr(highs.astype(float), lows.astype(float), closes.astype(float), 14)[-1]
    assert e.atr_ticks == pytest.approx(want, rel=1e-12)
    last = int(closes[-1])
    e.on_trade_price(last, SEC)
    v = e.validate(intent(0, inst=inst.id), 0, SEC)
    assert v.approved and v.quantity >= 1
    assert v.stop_loss == last - int(np.floor(1.5 * want + 1e-9))
    assert v.take_profit == last + int(np.floor(3.0 * want + 1e-9))
