"""The daemon under a service manager: readiness notification and a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HIMARI = [sys.executable, "-m", "himari.daemon.cli"]


def wait_for_line(proc: subprocess.Popen, needle: str, timeout_s: float) -> str:
    """Read stderr lines until one contains `needle` (bounded by `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            if needle in line:
                return line
            if not line and proc.poll() is not None:
                break
    raise AssertionError(f"no stderr line with {needle!r} within {timeout_s} s")


def test_run_notifies_ready_and_stops_gracefully_on_sigterm(tmp_path: Path):
    cfg = tmp_path / "daemon.toml"
    out = tmp_path / "out"
    # Paced at recorded speed, so the replay would run for days unless stopped.
    cfg.write_text(f"""
[feed.synthetic]
n_ticks = 2000000
[strategy.params]
bar_spec = "20t"
fast = 3
slow = 5
[replay]
speed = 1.0
[report]
out_dir = "{out}"
[log]
level = "info"
format = "json"
""")
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    env = dict(os.environ, NOTIFY_SOCKET=str(notify))
    proc = subprocess.Popen([*HIMARI, "run", "--config", str(cfg)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_line(proc, '"event":"ready"', 60)
        sock.settimeout(10)
        assert sock.recv(64) == b"READY=1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert sock.recv(64) == b"STOPPING=1"
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    report = json.loads((out / "report.json").read_text())
    assert report["stopped_early"] is True
    assert report["ticks"] < 2_000_000
    assert report["final_position_lots"] == 0
