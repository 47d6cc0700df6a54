"""Paper trading on the simulated exchange, on the wall clock: a `himari run` subprocess trades
the synthetic stream paced by a sped-up live clock, stops on SIGTERM, and its report, fills.csv
and journal agree; a restart on the same state directory adopts what the journal proves."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from decimal import Decimal
from pathlib import Path

from himari.daemon.orders.journal import Journal

from .test_daemon import HIMARI, wait_for_line
from .test_state import journal_json, wait_for_fills

REPO = Path(__file__).resolve().parents[2]


def start(state: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*HIMARI, "run", "--config", str(REPO / "config" / "paper-sim.toml"),
         "--state-dir", str(state), "--out", str(out), "--set", "live.speed=3000"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def run_until_fills(state: Path, out: Path, fills: int) -> dict:
    proc = start(state, out)
    try:
        wait_for_line(proc, '"event":"ready"', 120)
        wait_for_fills(state / "journal.jsonl", fills, proc, 120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    return json.loads((out / "report.json").read_text())


def test_paper_sim_stops_on_sigterm_with_report_fills_and_journal_agreeing(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    rep = run_until_fills(state, out, 10)
    assert rep["mode"] == "paper" and rep["stopped_by"] == "signal"
    assert rep["final_position_lots"] == 0  # flattened on the way out
    with (out / "fills.csv").open() as fh:
        fills = list(csv.DictReader(fh))
    journal = [Journal.decode(r) for r in Journal.read(state / "journal.jsonl")]
    journal_fills = [r for r in journal if type(r).__name__ == "Fill"]
    assert rep["fills"] == len(fills) == len(journal_fills) >= 10
    assert [f["fill_id"] for f in fills] == [f.fill_id for f in journal_fills]
    assert len({f.exec_id for f in journal_fills}) == len(journal_fills)  # one booking each
    signed = sum((1 if f["side"] == "BUY" else -1) * Decimal(f["quantity"]) for f in fills)
    assert signed == 0
    rebuilt = journal_json(state)
    assert rebuilt["fills"] == rep["fills"] and rebuilt["in_flight"] == []
    assert rebuilt["positions"]["SYN"]["quantity_lots"] == 0
    cash = -sum((1 if f["side"] == "BUY" else -1) * Decimal(f["quantity"]) * Decimal(f["price"])
                for f in fills)
    assert Decimal(rep["pnl"]) == cash - sum(Decimal(f["fee"]) for f in fills)

    # A restart on the same state directory: a new id session, the journal appended to.
    run_until_fills(state, out, rep["fills"] + 5)
    after = journal_json(state)
    assert len(after["sessions"]) == 2 and after["anomalies"] == []
    assert after["fills"] >= rep["fills"] + 5 and after["duplicate_fills"] == 0


def test_a_sigkilled_paper_session_restarts_holding_what_the_journal_proves(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    held = 0
    for _ in range(5):  # kill until the kill lands while a position is open (bounded)
        proc = start(state, out)
        try:
            wait_for_line(proc, '"event":"ready"', 120)
            wait_for_fills(state / "journal.jsonl", journal_json(state)["fills"] + 7
                           if (state / "journal.jsonl").exists() else 7, proc, 120)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        held = journal_json(state)["positions"]["SYN"]["quantity_lots"]
        if held:
            break
    if not held:
        import pytest

        pytest.skip("five kills all landed while flat (no position to carry over)")
    before = journal_json(state)
    proc = start(state, out)
    try:
        line = wait_for_line(proc, '"event":"recovered"', 120)
        assert json.loads(line)["positions"] == {"SYN": held}  # adopted before any order
        wait_for_line(proc, '"event":"ready"', 120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    rep = json.loads((out / "report.json").read_text())
    after = journal_json(state)
    # the restarted session flattened what it inherited, and the books agree with the venue
    assert rep["final_position_lots"] == 0
    assert after["positions"]["SYN"]["quantity_lots"] == 0
    assert after["anomalies"] == [] and after["duplicate_fills"] == 0
    assert after["fills"] == before["fills"] + rep["fills"]
