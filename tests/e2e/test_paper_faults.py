"""`himari paper` under the broker's faults (issue 13): a bounded paper session against the broker
sandbox, trading two symbols, while the test injects faults through `POST /admin/faults`: each
fault in its own session, then all of them at once at a high rate. At the end the daemon's
positions, cash and fills equal the sandbox's, read back with alpaca-py and from the sandbox's
state file: no client order id twice at the broker (no blind resend), every broker execution booked
exactly once in the journal (by exec id), nothing booked that the broker did not execute, and no
unhandled exception (no Traceback, `handler_failed` or `runtime_failure`), exit status 0.

Faults are injected on the daemon's progress (its k-th order in the journal), not on a timer, and
each session checks afterwards that its fault actually fired (counters consumed at the broker, a
reconnect logged, fills split), so a pass cannot come from a fault that never happened.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from himari.daemon.paper import SandboxProcess, start_sandbox

KEY, SECRET = "PKFAULTTEST0001", "fault-test-secret-never-printed"
SYMBOLS = ["AAPL", "MSFT"]
DURATION_S = 10.0
CASH = Decimal("100000")
QTY = 2  # a reversal is 4 lots: partial fills can split every order
UNHANDLED = ("Traceback", "handler_failed", "runtime_failure")


# ---- the broker's admin endpoint and the daemon's progress

def admin(url: str, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}/admin/faults", data=data, method=method, headers={
        "APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET,
        "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
    return json.loads(text) if text else {}


def journal_records(state_dir: Path) -> list[dict[str, Any]]:
    """The daemon's journal records (each line: a checksum, a space, the JSON record); a line
    still being written (no newline yet) is skipped."""
    path = state_dir / "journal.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n") and " " in line:
            out.append(json.loads(line.split(" ", 1)[1]))
    return out


def submitted(state_dir: Path) -> int:
    return sum(r["type"] == "OrderSubmitted" for r in journal_records(state_dir))


# ---- fault plans: what to inject at the daemon's k-th order

Plan = Callable[[int], list[dict[str, Any]]]


def at_orders(body: dict[str, Any], orders: tuple[int, ...] = (1, 3, 5)) -> Plan:
    return lambda k: [body] if k in orders else []


def everything(k: int) -> list[dict[str, Any]]:
    """All faults, re-armed at every order the daemon sends, the sockets dropped each time."""
    return [{"delay_ms": 150, "never_confirm": k % 2 == 0, "partial_fills": 3, "duplicate": 4,
             "reorder": 4, "http_429": {"count": 1, "retry_after": 1},
             "http_5xx": {"count": 1, "status": 500 + (k % 4)}}, {"drop_ws": True}]


@dataclass
class Session:
    daemon_rc: int
    output: str
    sandbox_output: str
    report: dict[str, Any]
    journal: list[dict[str, Any]]
    journal_summary: dict[str, Any]
    fills_csv: list[dict[str, str]]
    positions: dict[str, Decimal]
    orders: list[Any]
    cash: Decimal
    broker_fills: list[dict[str, Any]]
    faults_left: dict[str, Any]
    injected: list[dict[str, Any]]


def run_session(tmp: Path, plan: Plan) -> Session:
    env = dict(os.environ, APCA_API_KEY_ID=KEY, APCA_API_SECRET_KEY=SECRET)
    sb: SandboxProcess = start_sandbox(tmp / "sandbox", env, SYMBOLS, speed=40)
    state, out = tmp / "state", tmp / "out"
    log_path = tmp / "daemon.log"
    injected: list[dict[str, Any]] = []
    try:
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "himari.daemon.cli", "paper", "--broker-url", sb.url,
                 "--duration", str(DURATION_S), "--state-dir", str(state), "--out", str(out),
                 "--set", "live.speed=40", "--set", 'strategy.name="ema_cross"',
                 "--set", 'strategy.params.bar_spec="20t"',
                 "--set", "strategy.params.fast=3", "--set", "strategy.params.slow=6",
                 "--set", f"strategy.params.quantity={QTY}", "--set", 'log.level="info"'],
                env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=str(tmp))
            seen = 0
            deadline = time.monotonic() + 180
            while proc.poll() is None and time.monotonic() < deadline:
                n = submitted(state)
                for k in range(seen + 1, n + 1):
                    for body in plan(k):
                        admin(sb.url, "POST", body)
                        injected.append(body)
                seen = n
                time.sleep(0.05)  # polling the journal, not waiting for an outcome
            if proc.poll() is None:
                proc.kill()
            rc = proc.wait(timeout=30)
        faults_left = admin(sb.url, "GET")
        admin(sb.url, "DELETE")  # the reads below see the broker as it is, not its faults
        tc = TradingClient(KEY, SECRET, paper=True, url_override=sb.url)
        positions = {p.symbol: Decimal(p.qty) for p in tc.get_all_positions()}
        orders = tc.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500))
        cash = Decimal(tc.get_account().cash)
    finally:
        sb.stop()
    broker_state = json.loads((tmp / "sandbox" / "sandbox-state.json").read_text())
    summary = subprocess.run([sys.executable, "-m", "himari.daemon.cli", "journal", str(state)],
                             capture_output=True, text=True, timeout=60, env=env)
    assert summary.returncode == 0, summary.stderr[-2000:]
    with (out / "fills.csv").open() as f:
        fills_csv = list(csv.DictReader(f))
    return Session(
        daemon_rc=rc, output=log_path.read_text(errors="replace"),
        sandbox_output="".join(sb.lines), report=json.loads((out / "report.json").read_text()),
        journal=journal_records(state), journal_summary=json.loads(summary.stdout),
        fills_csv=fills_csv, positions=positions, orders=orders, cash=cash,
        broker_fills=broker_state["fills"], faults_left=faults_left, injected=injected)


# ---- the invariants every session must hold

def notable(text: str) -> str:
    """The lines worth reading when a session fails: not the info-level chatter."""
    lines = [ln for ln in text.splitlines() if '"level":"info"' not in ln]
    return "\n".join(lines)[-4000:]


def check_agreement(s: Session) -> None:
    assert s.daemon_rc == 0, notable(s.output)
    for word in UNHANDLED:
        assert word not in s.output, s.output[max(0, s.output.find(word) - 500):][:3000]
        assert word not in s.sandbox_output, s.sandbox_output[-3000:]
    assert s.report["bus"]["handler_errors"] == {}
    assert s.report["stopped_by"] == "duration"
    assert s.report["reconciliation"]["positions_equal"] is True, notable(s.output)

    # no duplicate order: every client order id reached the broker at most once
    coids = Counter(o.client_order_id for o in s.orders)
    assert coids and max(coids.values()) == 1, [c for c, n in coids.items() if n > 1]
    submitted_ids = [r["client_order_id"] for r in s.journal if r["type"] == "OrderSubmitted"]
    assert len(submitted_ids) == len(set(submitted_ids))
    assert set(coids) <= set(submitted_ids)  # the broker saw nothing the daemon did not send

    # no lost fill, none twice: the journal's fills are the broker's executions, one to one
    fills = [r for r in s.journal if r["type"] == "Fill"]
    ours = Counter(r["exec_id"] for r in fills)
    theirs = Counter(f["execution_id"] for f in s.broker_fills)
    assert max(ours.values()) == 1 and max(theirs.values()) == 1
    assert s.journal_summary["duplicate_fills"] == 0  # a rebuild finds no fill twice
    assert set(ours) == set(theirs), (set(theirs) - set(ours), set(ours) - set(theirs))
    assert len(s.fills_csv) == len(fills) == s.report["fills"] == s.journal_summary["fills"]
    by_coid: Counter[str] = Counter()
    for r in fills:
        by_coid[r["client_order_id"]] += r["quantity"]
    for o in s.orders:
        assert Decimal(o.filled_qty or 0) == by_coid.get(o.client_order_id, 0), o.client_order_id

    # positions: report, journal and broker agree (lot size 1)
    journal_pos = {i: Decimal(p["quantity_lots"])
                   for i, p in s.journal_summary["positions"].items()}
    report_pos = {i: Decimal(v["position_lots"]) for i, v in s.report["instruments"].items()}
    for sym in SYMBOLS:
        broker = s.positions.get(sym, Decimal(0))
        assert report_pos.get(sym, 0) == broker == journal_pos.get(sym, 0), sym
    assert s.journal_summary["in_flight"] == []

    # cash: the broker's equals the start minus what the daemon's fills paid
    paid = sum((Decimal(f["quantity"]) * Decimal(f["price"]) * (1 if f["side"] == "BUY" else -1)
                + Decimal(f["fee"]) for f in s.fills_csv), Decimal(0))
    assert s.cash == CASH - paid


def reconnects(s: Session) -> int:
    return s.output.count('"state":"connected"') - 1  # the first connect is not a reconnect


def split_fills(s: Session) -> bool:
    return len(s.broker_fills) > len({f["order_id"] for f in s.broker_fills})


def dropped_duplicates(s: Session) -> int:
    """Repeated executions the order manager recognised by exec id and did not book."""
    return int(s.report["order_manager"].get("duplicate_fills", 0))


def journaled(s: Session, kind: str) -> int:
    return sum(r["type"] == kind for r in s.journal)


# each fault, and how its session shows that it fired
FAULTS: dict[str, tuple[Plan, Callable[[Session], bool]]] = {
    "drop_ws": (at_orders({"drop_ws": True}, (1, 2, 4, 6)), lambda s: reconnects(s) >= 2),
    "delay_ms": (at_orders({"delay_ms": 400}, (1,)), lambda s: s.faults_left["delay_ms"] == 400),
    "duplicate": (at_orders({"duplicate": 3}),
                  lambda s: s.faults_left["duplicate"] == 0
                  and dropped_duplicates(s) > 0),
    "reorder": (at_orders({"reorder": 2}, (1, 2)), lambda s: s.faults_left["reorder"] < 2),
    "http_429": (at_orders({"http_429": {"count": 2, "retry_after": 1}}),
                 lambda s: s.faults_left["http_429"]["count"] == 0),
    "http_5xx": (at_orders({"http_5xx": {"count": 2, "status": 503}}),
                 lambda s: s.faults_left["http_5xx"]["count"] == 0),
    # no `new` update after the first order: most orders were never acknowledged, only filled
    "never_confirm": (at_orders({"never_confirm": True}, (1,)),
                      lambda s: journaled(s, "OrderAccepted") < journaled(s, "OrderSubmitted")),
    "partial_fills": (at_orders({"partial_fills": 3}, (1,)), split_fills),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_paper_session_under_one_fault_agrees_with_the_broker(tmp_path: Path, fault: str):
    plan, fired = FAULTS[fault]
    s = run_session(tmp_path, plan)
    assert s.injected, "the daemon sent no order: the fault was never injected"
    assert s.report["orders"] >= 2 and s.report["fills"] >= 2
    check_agreement(s)
    assert fired(s), f"{fault} did not fire: {s.faults_left}"


def test_a_paper_session_under_all_faults_at_a_high_rate_agrees_with_the_broker(tmp_path: Path):
    s = run_session(tmp_path, everything)
    assert len(s.injected) >= 8
    assert s.report["fills"] >= 4
    check_agreement(s)
    assert split_fills(s) and reconnects(s) >= 2
    assert dropped_duplicates(s) > 0
    assert s.faults_left["delay_ms"] == 150 and s.faults_left["partial_fills"] == 3
