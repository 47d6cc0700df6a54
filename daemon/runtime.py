"""Process lifecycle: uvloop, signals, systemd readiness, and a clean shutdown.

Every task is owned: `run_main` runs the session as one task, SIGTERM/SIGINT cancel it, and the
session's own tasks (the decision recorder) are cancelled in its `finally`. When systemd started us
with `Type=notify`, READY=1 is sent once kernels are compiled and STOPPING=1 on shutdown.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("himari.runtime")


def sd_notify(message: str) -> bool:
    """Send a state line to systemd's notify socket, if there is one."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify_failed", error=str(exc))
        return False


async def _main(cfg: Any, data: list[str], out: Path) -> dict[str, Any] | None:
    from himari.daemon.app import run_replay

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        # First signal: a graceful stop (the session flattens and writes its report). A second
        # one while that runs cancels outright.
        nonlocal signals_seen
        signals_seen += 1
        log.warning("shutdown_requested", signal=signame, graceful=signals_seen == 1)
        if signals_seen == 1:
            sd_notify("STOPPING=1")
        if task is not None:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        report = await run_replay(cfg, data, out, on_ready=lambda: sd_notify("READY=1"))
        log.info("finished", ticks=report["ticks"], fills=report["fills"], pnl=report["pnl"],
                 stopped_early=report.get("stopped_early", False))
        return report
    except asyncio.CancelledError:
        log.error("stopped_without_report")
        return None
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


def run_main(cfg: Any, data: list[str], out: Path) -> dict[str, Any] | None:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # uvloop is a dependency; this keeps odd platforms working
        runner = asyncio.run
    return runner(_main(cfg, data, out))
