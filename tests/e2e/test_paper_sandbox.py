"""`himari paper`: a bounded paper session across a real network boundary. The daemon starts the
local broker sandbox as its own process on loopback, trades two symbols through the Alpaca
adapter, stops by itself, and its positions equal the broker's; the keys never leak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SECRET = "s3cret-value-that-must-never-be-printed"


def test_a_bounded_paper_session_against_the_sandbox_reconciles(tmp_path: Path):
    out = tmp_path / "out"
    env = dict(os.environ, APCA_API_KEY_ID="PKTESTKEY0001", APCA_API_SECRET_KEY=SECRET)
    done = subprocess.run(
        [sys.executable, "-m", "himari.daemon.cli", "paper", "--duration", "8", "--out", str(out),
         "--state-dir", str(tmp_path / "state"), "--set", "live.speed=40",
         "--set", 'strategy.name="ema_cross"', "--set", 'strategy.params.bar_spec="20t"',
         "--set", "strategy.params.fast=3",
         "--set", "strategy.params.slow=6", "--set", 'log.level="info"'],
        env=env, capture_output=True, text=True, timeout=180, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reconciliation with the broker" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "paper" and report["stopped_by"] == "duration"
    assert set(report["instruments"]) == {"AAPL", "MSFT"}
    assert report["ticks"] > 0 and report["fills"] > 0
    assert report["reconciliation"]["positions_equal"] is True
    assert report["final_position_lots"] == 0  # flattened through the broker at the stop
    for text in (done.stdout, done.stderr, *(p.read_text(errors="replace")
                                             for p in out.rglob("*") if p.is_file())):
        assert SECRET not in text
