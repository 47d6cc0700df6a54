"""The hot-path handler order that engine.py's docstring declares is the order the bus runs."""

from __future__ import annotations

from pathlib import Path

from himari.daemon.app import build_session
from himari.daemon.config import load_config
from himari.daemon.events import (Bar, ExecutionDiscrepancy, OrderIntent, OrderSubmitted,
                                  PositionUpdate)


# Pinned: the handler names below are the EMA cross's (the default strategy is the ensemble).
EMA = 'strategy.name="ema_cross"'


def handlers(session, event_type) -> list[str]:
    return [s.name for s in session.bus._subs[event_type]]


def test_what_a_bar_triggers_runs_in_the_declared_order(tmp_path: Path):
    session = build_session(load_config(None, [EMA, "matrices.enabled=true"]), [], tmp_path)
    assert handlers(session, Bar) == ["portfolio", "matrices", "ema_cross.bar"]
    assert handlers(session, OrderIntent) == ["risk_gate"]
    assert handlers(session, OrderSubmitted) == ["risk_gate.working", "ema_cross.submitted"]
    assert handlers(session, PositionUpdate) == ["portfolio.trades", "ema_cross.position"]
    assert session.bus.has_subscribers(ExecutionDiscrepancy)  # recorded in decisions.jsonl


def test_no_entries_while_the_brokers_clock_says_closed_exits_still_pass(tmp_path: Path):
    from himari.daemon.events import OrderIntent, RiskVerdict

    session = build_session(load_config(None, [EMA, "matrices.enabled=false"]), [], tmp_path)
    session.core.on_tick("SYN", 10_000, 1_000)
    seen: list[RiskVerdict] = []
    session.bus.subscribe(RiskVerdict, seen.append, name="test", order=99)

    def intent(n: int, side: int, reduce_only: bool) -> OrderIntent:
        return OrderIntent(event_id=f"I-{n}", ts_ns=1_000, decision_id="D", strategy_id="s",
                           instrument_id="SYN", side=side, quantity=1, reduce_only=reduce_only)

    session.client.market_open = False  # what a broker's execution client reports
    session.bus.publish(intent(1, 1, False))
    session.bus.publish(intent(2, -1, True))
    session.client.market_open = True
    session.bus.publish(intent(3, 1, False))
    assert [v.rule for v in seen[:1]] == ["market_closed"] and not seen[0].approved
    assert seen[1].rule != "market_closed"  # an exit is never refused for market hours
    assert seen[2].approved
