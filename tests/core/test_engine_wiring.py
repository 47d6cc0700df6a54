"""The hot-path handler order that engine.py's docstring declares is the order the bus runs."""

from __future__ import annotations

from pathlib import Path

from himari.daemon.app import build_session
from himari.daemon.config import load_config
from himari.daemon.events import (Bar, ExecutionDiscrepancy, OrderIntent, OrderSubmitted,
                                  PositionUpdate)


def handlers(session, event_type) -> list[str]:
    return [s.name for s in session.bus._subs[event_type]]


def test_what_a_bar_triggers_runs_in_the_declared_order(tmp_path: Path):
    session = build_session(load_config(None, ["matrices.enabled=true"]), [], tmp_path)
    assert handlers(session, Bar) == ["portfolio", "matrices", "ema_cross.bar"]
    assert handlers(session, OrderIntent) == ["risk_gate"]
    assert handlers(session, OrderSubmitted) == ["risk_gate.working", "ema_cross.submitted"]
    assert handlers(session, PositionUpdate) == ["portfolio.trades", "ema_cross.position"]
    assert session.bus.has_subscribers(ExecutionDiscrepancy)  # recorded in decisions.jsonl
