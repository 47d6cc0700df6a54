"""Several instruments: `[risk.instruments.<ID>]` overrides, `[risk.portfolio]` limits and the
routing of `PortfolioRisk` (issue 12, "several instruments in one session")."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from himari.daemon.config import parse_config
from himari.daemon.configbase import ConfigError
from himari.daemon.events import Bar, OrderIntent, RiskVerdict, TickBatch
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.risk.config import PortfolioRiskConfig, RiskConfig
from himari.daemon.risk.engine import RiskEngine
from himari.daemon.risk.portfolio import PortfolioRisk

SEC = 1_000_000_000
ES = Instrument(id="ES", tick_size=Decimal("0.25"), multiplier=Decimal(50))  # 12.5 per tick
BTC = Instrument(id="BTC-PERP", tick_size=Decimal("0.1"), lot_size=Decimal("0.001"))  # 1e-4


def intent(inst: str, qty: int, side: int = 1, **kw: Any) -> OrderIntent:
    return OrderIntent(event_id="I", ts_ns=0, decision_id="D", strategy_id="s",
                       instrument_id=inst, side=side, quantity=qty, **kw)


def bar(inst: str, i: int, mid: int, half_range: int) -> Bar:
    return Bar(event_id=f"B{i}", ts_ns=i, instrument_id=inst, spec="5m", ts_open=i, ts_close=i,
               open=mid, high=mid + half_range, low=mid - half_range, close=mid, volume=1,
               n_ticks=1)


def book(**positions: tuple[int, int, int]) -> Any:
    return lambda iid: positions.get(iid.replace("-", "_"), (0, 0, 0))


def portfolio(**cfg: Any) -> PortfolioRisk:
    p = PortfolioRisk(RiskConfig(**cfg), [ES, BTC], IdSource())
    p.on_last_tick("ES", 20_000, 0)  # 5,000.00: 250,000 per lot
    p.on_last_tick("BTC-PERP", 400_000, 0)  # 40,000.0: 40 per lot
    return p


# ---------------------------------------------------------------- config

def test_instrument_table_overrides_only_its_keys() -> None:
    cfg = parse_config("""
[risk]
max_position = 4
[risk.instruments.BTC-PERP]
max_position = "2.5"
round_trip_fee = "1.5"
[risk.portfolio]
max_gross_notional = "1000000"
max_drawdown_pct = 3.0
""").risk
    btc = cfg.for_instrument("BTC-PERP")
    assert (btc.max_position, btc.round_trip_fee, btc.max_order_quantity) == \
        (Decimal("2.5"), Decimal("1.5"), Decimal(5))
    assert cfg.for_instrument("ES") is cfg
    assert cfg.portfolio == PortfolioRiskConfig(max_gross_notional=Decimal(1_000_000),
                                                max_drawdown_pct=3.0)
    # RiskEngine(cfg, instrument, ids) applies its instrument's table by itself
    assert RiskEngine(cfg, BTC, IdSource()).cfg.max_position == Decimal("2.5")
    assert RiskEngine(cfg, ES, IdSource()).cfg.max_position == 4


@pytest.mark.parametrize(("text", "key"), [
    ("[risk.instruments.BTC-PERP]\nmax_position = 0", "risk.instruments.BTC-PERP.max_position"),
    ("[risk.instruments.ES]\nprice_collar_pct = 200.0", "risk.instruments.ES.price_collar_pct"),
    ("[risk.instruments.ES]\nmax_postion = 3", "risk.instruments.ES.max_postion"),
    ("[risk.instruments.ES]\natr_period = \"x\"", "risk.instruments.ES.atr_period"),
    ("[risk.portfolio]\nmax_drawdown_pct = -1.0", "risk.portfolio.max_drawdown_pct"),
    ("[risk.portfolio]\nmax_gross_notional = \"-5\"", "risk.portfolio.max_gross_notional"),
    ("[risk.portfolio]\nmax_gros = 5", "risk.portfolio.max_gros"),
])
def test_bad_override_names_the_dotted_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.key == key


def test_portfolio_defaults_never_bind() -> None:
    c = RiskConfig()
    assert c.portfolio.max_gross_notional == 0 and c.portfolio.max_drawdown_pct == 0.0
    assert c.instruments == {}


# ---------------------------------------------------------------- routing

def test_routes_each_intent_to_its_instruments_engine() -> None:
    p = PortfolioRisk(RiskConfig(instruments={"ES": {"max_order_quantity": 1}}), [ES, BTC],
                      IdSource())
    p.on_tick_batch(TickBatch.from_trades("ES", np.array([1]), np.array([20_000]), np.array([1])))
    p.on_last_tick("BTC-PERP", 400_000, 1)
    assert p.engine("ES").last_tick == (20_000, 1)
    assert p.validate(intent("ES", 2), 0, SEC).rule == "max_order_qty"  # ES override: 1
    assert p.validate(intent("BTC-PERP", 2), 0, SEC).approved  # default: 5 units = 5,000 lots
    v = p.validate(intent("NQ", 1), 0, SEC)
    assert not v.approved and v.rule == "instrument" and "NQ" in v.reason
    for i in range(14):
        p.on_bar(bar("ES", i, 20_000, 4))
    assert p.engine("ES").atr_ticks == 8.0 and np.isnan(p.engine("BTC-PERP").atr_ticks)
    p.on_trade_closed("BTC-PERP", Decimal(-5))
    assert p.engine("BTC-PERP").snapshot()["checked"] == 1


def test_single_instrument_gives_the_plain_engines_verdicts() -> None:
    cfg = RiskConfig(max_orders_per_minute=3)
    plain = RiskEngine(cfg, ES, IdSource())
    wrapped = PortfolioRisk(cfg, [ES], IdSource())
    for e in (plain, wrapped):
        e.on_last_tick(20_000, 0) if isinstance(e, RiskEngine) else e.on_last_tick("ES", 20_000, 0)
        for i in range(14):
            e.on_bar(bar("ES", i, 20_000, 4))
    rng = np.random.default_rng(3)
    for k in range(200):
        it = intent("ES", int(rng.integers(0, 4)), side=int(rng.choice([1, -1])))
        pos, wb, ws = (int(x) for x in rng.integers(-3, 4, 3))
        wb, ws = abs(wb), abs(ws)
        a = plain.validate(it, pos, k * SEC, wb, ws)
        b = wrapped.validate(it, pos, k * SEC, wb, ws, book(ES=(pos, wb, ws)))
        assert (a.approved, a.quantity, a.rule, a.stop_loss) == \
            (b.approved, b.quantity, b.rule, b.stop_loss)


# ---------------------------------------------------------------- portfolio gross notional

def test_gross_notional_counts_every_instruments_worst_case_exactly() -> None:
    # limit 1,000,000: ES holds 3 lots (750,000) and has 1 more working buy -> 1,000,000
    p = portfolio(max_position=Decimal(100),
                  portfolio=PortfolioRiskConfig(max_gross_notional=Decimal(1_010_000)))
    others = book(ES=(3, 1, 0))
    assert p.gross_notional(others, skip="BTC-PERP") == Decimal(1_000_000)
    # BTC: 10,000 / 40 per lot = 250 lots of room (0.25 BTC)
    assert p.validate(intent("BTC-PERP", 250), 0, SEC, exposure=others).approved
    v = p.validate(intent("BTC-PERP", 251), 0, SEC, exposure=others)
    assert v.rule == "portfolio_notional" and v.values == {"value": 1_010_040.0,
                                                         "limit": 1_010_000.0}
    assert "risk.portfolio.max_gross_notional" in v.reason
    # the worst side of a short book counts too: -3 with 1 working sell = 4 lots
    assert not p.validate(intent("BTC-PERP", 251), 0, SEC, exposure=book(ES=(-3, 0, 1))).approved
    # exits are never refused by it, even with the book over the limit
    assert p.validate(intent("BTC-PERP", 300, side=-1), 300, SEC,
                      exposure=book(ES=(5, 0, 0))).approved


def test_sizing_respects_the_portfolio_headroom() -> None:
    big = dict(max_position=Decimal(10**6), max_order_quantity=Decimal(10**6),
               max_notional=Decimal(10**12))
    p = portfolio(portfolio=PortfolioRiskConfig(max_gross_notional=Decimal(1_000_000)), **big)
    for i in range(14):
        p.on_bar(bar("BTC-PERP", i, 400_000, 40))  # ATR 80: stop 120 ticks = 0.012 per lot
    # Kelly budget 2,000 buys 166,666 lots; the portfolio room of 1,000,000 holds 25,000
    free = p.validate(intent("BTC-PERP", 0), 0, SEC, exposure=book())
    assert free.approved and free.quantity == 25_000
    v = p.validate(intent("BTC-PERP", 0), 0, SEC, exposure=book(ES=(3, 0, 0)))  # room 250,000
    assert v.approved and v.quantity == 6_250  # 250,000 / 40 per lot
    assert p.validate(intent("BTC-PERP", 0), 0, SEC,
                      exposure=book(ES=(4, 0, 0))).rule == "no_headroom"


# ---------------------------------------------------------------- portfolio drawdown

def test_portfolio_drawdown_halts_every_engine_and_exits_still_pass() -> None:
    p = portfolio(max_drawdown_pct=50.0, daily_loss_limit_pct=50.0,
                  portfolio=PortfolioRiskConfig(max_drawdown_pct=3.0))
    p.on_equity(Decimal("110000"), SEC)
    p.on_equity(Decimal("106700.01"), 2 * SEC)  # 2.99999 %
    assert not p.halted
    p.on_equity(Decimal("106700"), 3 * SEC)  # 3 % of 110,000
    assert p.halted and "risk.portfolio.max_drawdown_pct" in p.halt_reason
    for iid in ("ES", "BTC-PERP"):
        assert p.engine(iid).halted
        assert p.validate(intent(iid, 1), 0, 4 * SEC).rule == "kill_switch"
        assert p.validate(intent(iid, 2, side=-1, reduce_only=True), 2, 4 * SEC).approved
    p.on_equity(Decimal("120000"), 5 * SEC)  # recovery does not resume
    assert p.halted
    p.resume()
    assert not p.halted and p.validate(intent("ES", 1), 0, 6 * SEC).approved
    p.on_equity(Decimal("116400"), 7 * SEC)  # 3 % below the rebased mark of 120,000
    assert p.halted


def test_engine_drawdown_halts_only_that_engine() -> None:
    p = portfolio(instruments={"ES": {"max_drawdown_pct": 1.0}}, daily_loss_limit_pct=50.0)
    p.on_equity(Decimal("98000"), SEC)
    assert p.engine("ES").halted and not p.engine("BTC-PERP").halted
    assert p.validate(intent("BTC-PERP", 1), 0, SEC).approved
    v = p.validate(intent("ES", 1), 0, SEC)
    assert isinstance(v, RiskVerdict) and v.rule == "kill_switch" and not p.halt_reason
