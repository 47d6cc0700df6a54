"""The daemon under a service manager: readiness notification and a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HIMARI = [sys.executable, "-m", "himari.daemon.cli"]


_readers: dict[int, "queue.Queue[str | None]"] = {}


def _lines(proc: subprocess.Popen) -> "queue.Queue[str | None]":
    """One reader thread per process turns its stderr into a queue of lines. (select() on a
    buffered pipe misses lines already read into Python's buffer; a thread never does.) The
    thread ends when the process closes stderr."""
    q = _readers.get(proc.pid)
    if q is None:
        q = _readers[proc.pid] = queue.Queue()
        assert proc.stderr is not None
        stream = proc.stderr

        def pump() -> None:
            for line in stream:
                q.put(line)
            q.put(None)

        threading.Thread(target=pump, daemon=True, name=f"stderr-{proc.pid}").start()
    return q


def wait_for_line(proc: subprocess.Popen, needle: str, timeout_s: float) -> str:
    """Read stderr lines until one contains `needle` (bounded by `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    q = _lines(proc)
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            break
        if line is None:  # the process closed stderr (it exited)
            q.put(None)
            break
        if needle in line:
            return line
    raise AssertionError(f"no stderr line with {needle!r} within {timeout_s} s")


def test_run_notifies_ready_and_stops_gracefully_on_sigterm(tmp_path: Path):
    cfg = tmp_path / "daemon.toml"
    out = tmp_path / "out"
    # Paced at recorded speed, so the replay would run for days unless stopped.
    cfg.write_text(f"""
[feed.synthetic]
n_ticks = 2000000
[strategy]
name = "ema_cross"
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
        wait_for_line(proc, '"event":"ready"', 120)
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
