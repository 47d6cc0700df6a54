"""Nothing lost, nothing duplicated across a crash: the daemon on a state directory, SIGKILLed
mid-session, rebuilt by `himari journal`, restarted; one owner per directory; exit 2 for what a
restart cannot fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import structlog

from himari.daemon.orders.journal import Journal

from .test_daemon import wait_for_line


@pytest.fixture(autouse=True)
def _restore_logging():
    """`main()` in-process binds structlog to this test's captured stderr; undo it after."""
    yield
    structlog.reset_defaults()

HIMARI = [sys.executable, "-m", "himari.daemon.cli"]

# Paced at 2000x recorded speed: orders flow at once, and the 2M ticks would last half an hour.
# The EMA cross, pinned: it trades at once (the default ensemble needs a week of data).
PACED = """
[feed.synthetic]
n_ticks = 2000000
[strategy]
name = "ema_cross"
[strategy.params]
bar_spec = "20t"
fast = 3
slow = 5
[replay]
speed = 2000.0
progress = false
[log]
level = "info"
format = "json"
"""


def start(cfg: Path, state: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*HIMARI, "run", "--config", str(cfg), "--state-dir", str(state),
                             "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def wait_for_fills(journal: Path, n: int, proc: subprocess.Popen, timeout_s: float) -> None:
    """Poll the journal (the daemon's output) until it holds `n` fills, bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_bytes().count(b'"type":"Fill"') >= n:
            return
        assert proc.poll() is None, f"the daemon exited early with {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} fills in {journal} within {timeout_s} s")


def journal_json(state: Path) -> dict:
    done = subprocess.run([*HIMARI, "journal", str(state)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_sigkill_mid_session_then_rebuild_and_restart(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(PACED)
    state, out = tmp_path / "state", tmp_path / "out"
    proc = start(cfg, state, out)
    try:
        wait_for_line(proc, '"event":"ready"', 120)
        wait_for_fills(state / "journal.jsonl", 20, proc, 60)
        proc.send_signal(signal.SIGKILL)  # no handler, no flush, no report
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "report.json").exists()

    # What the journal says, record by record (a torn tail, if the kill tore one, excluded) ...
    contents = Journal.read(state / "journal.jsonl")
    records = [Journal.decode(r) for r in contents]
    fills = [r for r in records if type(r).__name__ == "Fill"]
    position = sum(f.side * f.quantity for f in fills)
    # The status each order's records lead to; the Fill (not OrderFilled, which a kill may
    # separate from it) is what moves quantity.
    status: dict[str, str] = {}
    ordered: dict[str, int] = {}
    filled: Counter[str] = Counter()
    names = {"OrderSubmitted": "submitted", "OrderAccepted": "accepted",
             "OrderCancelled": "cancelled", "OrderRejected": "rejected", "OrderExpired": "expired"}
    for r in records:
        name = type(r).__name__
        if name == "OrderSubmitted":
            ordered[r.order_id] = r.quantity
        if name in names:
            status[r.order_id] = names[name]
        elif name == "Fill":
            filled[r.order_id] += r.quantity
            status[r.order_id] = ("filled" if filled[r.order_id] == ordered[r.order_id]
                                  else "partially_filled")
    # ... is what `himari journal` rebuilds.
    rebuilt = journal_json(state)
    assert rebuilt["fills"] == len(fills) >= 20
    assert rebuilt["records"] == len(records)
    assert rebuilt["positions"]["SYN"]["quantity_lots"] == position
    assert rebuilt["anomalies"] == [] and rebuilt["cut"] == contents.cut
    by_status = {oid: st for st, ids in rebuilt["orders"].items() for oid in ids}
    assert by_status == status and "filled" in by_status.values()
    first_session = rebuilt["sessions"]
    assert len(first_session) == 1

    # A restart: the previous journal is read, in-flight orders are settled, a new id session.
    proc = start(cfg, state, out)
    try:
        wait_for_line(proc, '"event":"ready"', 120)
        wait_for_fills(state / "journal.jsonl", len(fills) + 10, proc, 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    after = journal_json(state)
    assert after["in_flight"] == [] and after["anomalies"] == []
    assert len(after["sessions"]) == 2 and first_session[0] in after["sessions"]
    assert after["records"] > len(records)  # appended to, never emptied
    client_ids = Counter(r["client_order_id"] for r in Journal.read(state / "journal.jsonl")
                         if r["type"] == "OrderSubmitted")
    assert max(client_ids.values()) == 1  # no client order id is ever reused
    assert json.loads((out / "report.json").read_text())["files"]["journal"] == str(
        state / "journal.jsonl")


def test_a_second_daemon_on_the_same_state_dir_exits_2_naming_the_first(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(PACED)
    state = tmp_path / "state"
    first = start(cfg, state, tmp_path / "out1")
    try:
        wait_for_line(first, '"event":"ready"', 120)
        second = subprocess.run([*HIMARI, "run", "--config", str(cfg), "--state-dir", str(state),
                                 "--out", str(tmp_path / "out2")], capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 2
        assert f"state directory {state} is in use by PID {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert not (tmp_path / "out2" / "report.json").exists()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert (tmp_path / "out1" / "report.json").exists()


def test_state_dir_from_config_and_problems_a_restart_cannot_fix_exit_2(capsys,
                                                                           tmp_path: Path) -> None:
    from himari.daemon.cli import main

    quick = ("[feed.synthetic]\nn_ticks = 20000\n[strategy]\nname = \"ema_cross\"\n"
             "[strategy.params]\nbar_spec = \"20t\"\nfast = 3\nslow = 5\n"
             "[replay]\nprogress = false\n[log]\nlevel = \"warning\"\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    cfg = tmp_path / "c.toml"
    cfg.write_text(quick + f'[daemon]\nstate_dir = "{tmp_path / "st"}"\n')
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "st" / "journal.jsonl").exists()  # the config key is used
    assert not (tmp_path / "o" / "journal.jsonl").exists()
    capsys.readouterr()

    for argv, needle in (
        (["--state-dir", str(blocker)], f"state directory {blocker} is not usable"),
        (["--out", str(blocker / "sub")], f"out directory {blocker / 'sub'} is not usable"),
        (["--out", str(blocker)], f"out directory {blocker} is not usable: a file is in the way"),
    ):
        code = main(["run", "--config", str(cfg), *argv])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err, err

    assert main(["journal", str(tmp_path / "nowhere")]) == 2
    assert "has no journal" in capsys.readouterr().err
    journal = tmp_path / "st" / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"00000000 {}\n" + b"".join(lines[1:]))
    for argv in (["journal", str(tmp_path / "st")], ["run", "--config", str(cfg)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "line 2 is damaged" in err and "Traceback" not in err, err


def test_a_torn_tail_is_reported_by_journal_and_moved_aside_on_restart(capsys,
                                                                         tmp_path: Path) -> None:
    from himari.daemon.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text("[feed.synthetic]\nn_ticks = 20000\n[strategy]\nname = \"ema_cross\"\n"
                   "[strategy.params]\nbar_spec = \"20t\"\nfast = 3\nslow = 5\n"
                   "[replay]\nprogress = false\n[log]\nlevel = \"warning\"\n")
    st = tmp_path / "st"
    args = ["run", "--config", str(cfg), "--state-dir", str(st), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    journal = st / "journal.jsonl"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-10])
    capsys.readouterr()
    assert main(["journal", str(st)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["cut"]) == 1 and "torn final line" in shown["cut"][0]
    assert journal.read_bytes() == whole[:-10]  # `himari journal` only reads
    assert main(args) == 0
    assert (st / "journal.cut-1").read_bytes() == whole[whole.rfind(b"\n", 0, -1) + 1:-10]
    assert Journal.read(journal).cut == []


def test_sighup_stops_gracefully_with_a_report(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(PACED)
    out = tmp_path / "out"
    proc = start(cfg, tmp_path / "state", out)
    try:
        wait_for_line(proc, '"event":"ready"', 120)
        proc.send_signal(signal.SIGHUP)
        line = wait_for_line(proc, '"event":"shutdown_requested"', 30)
        assert "reload not supported, stopping gracefully" in line and '"SIGHUP"' in line
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads((out / "report.json").read_text())
    assert report["stopped_early"] is True and report["final_position_lots"] == 0
    assert not (tmp_path / "state" / "lock").read_text()  # released: no PID left behind
    assert os.path.exists(tmp_path / "state" / "journal.jsonl")
