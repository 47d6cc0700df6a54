"""Process lifecycle: uvloop, signals, systemd readiness, the state directory and a clean shutdown.

Every task is owned: `run_main` runs the session as one task, SIGTERM/SIGINT/SIGHUP cancel it
(a graceful stop: the session flattens and writes its report; a second signal cancels outright),
and the session's own tasks (the decision recorder) are cancelled in its `finally`. SIGHUP has no
reload to perform yet, so it stops gracefully rather than killing the process (its default) or
being ignored. When systemd started us with `Type=notify`, READY=1 is sent once kernels are
compiled and STOPPING=1 on shutdown.

Start-up with a state directory (`prepare_state`): lock it (a second daemon exits 2 naming the
first's PID), rebuild the state from its journal (a damaged tail is reported and moved aside; damage
before intact records refuses to start), take a new id session, and settle every in-flight order
against the execution client before the session can send a new one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from himari.daemon.ids import IdSource
from himari.daemon.orders.journal import Journal, JournalCorrupt
from himari.daemon.orders.recovery import RecoveredState, load_state, resolve_in_flight
from himari.daemon.report.writers import set_aside_previous
from himari.daemon.statedir import StartupError, StateDir, usable_dir

log = structlog.get_logger("himari.runtime")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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


@dataclass
class Prepared:
    """What a session on a state directory starts from (the lock is held until `release`)."""

    state_dir: StateDir
    state: RecoveredState | None  # None for a new directory
    ids: IdSource
    settled: int  # in-flight orders settled against the venue

    @property
    def journal_path(self) -> Path:
        return self.state_dir.journal_path

    def release(self) -> None:
        self.state_dir.release()


def prepare_state(path: Path, *, fsync: bool, venue_orders: Iterable[Any] | None = (),
                  now_ns: int | None = None) -> Prepared:
    """Lock `path`, rebuild from its journal, take a new id session and journal the records that
    settle in-flight orders against `venue_orders` (the execution client's open-order reports; a
    fresh simulated venue has none, so every in-flight order is confirmed absent). None: a
    remote venue that remembers its orders; they stay in flight here and the session's
    reconciliation asks the venue about each one (an order it filled while we were down is
    never declared absent)."""
    sd = StateDir(path)
    try:
        state: RecoveredState | None = None
        if sd.journal_path.exists():
            try:
                state = load_state(sd.path)
            except JournalCorrupt as exc:
                raise StartupError(str(exc)) from None
            log.info("state_recovered", state_dir=str(sd.path), records=state.records,
                     orders=len(state.orders), in_flight=len(state.in_flight()),
                     fills=state.fills, duplicate_fills=state.duplicate_fills,
                     anomalies=len(state.anomalies))
            if state.cut:
                log.warning("journal_tail_cut", state_dir=str(sd.path), cut=state.cut)
        ids = IdSource.for_state_dir(sd.path, seen=state.sessions if state else ())
        settled = 0
        if state is not None and (state.in_flight() or state.cut):
            ts = now_ns if now_ns is not None else max(state.last_ts_ns, 0)
            records = (resolve_in_flight(state, venue_orders, ids, ts)
                       if venue_orders is not None else [])
            with Journal(sd.journal_path, fsync=fsync) as journal:  # also moves a cut tail aside
                for record in records:
                    journal.write(record)
                if journal.cut_file is not None:
                    log.warning("journal_tail_moved", to=str(journal.cut_file))
            settled = len(state.in_flight()) if venue_orders is not None else 0
            log.info("in_flight_settled", orders=settled, records=len(records),
                     left_to_reconcile=len(state.in_flight()) - settled)
        return Prepared(sd, state, ids, settled)
    except BaseException:
        sd.release()
        raise


async def _main(cfg: Any, data: list[str], out: Path, prepared: Prepared | None
                ) -> dict[str, Any] | None:
    from himari.daemon.app import run_session

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        # First signal: a graceful stop (the session flattens and writes its report). A second
        # one while that runs cancels outright.
        nonlocal signals_seen
        signals_seen += 1
        note = "reload not supported, stopping gracefully" if signame == "SIGHUP" else ""
        log.warning("shutdown_requested", signal=signame, graceful=signals_seen == 1, note=note)
        if signals_seen == 1:
            sd_notify("STOPPING=1")
        if task is not None:
            task.cancel()

    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        extra: dict[str, Any] = {}
        if prepared is not None:
            extra = {"journal_path": prepared.journal_path, "ids": prepared.ids,
                     "recovered": prepared.state}
        report = await run_session(cfg, data, out, on_ready=lambda: sd_notify("READY=1"), **extra)
        log.info("finished", ticks=report["ticks"], fills=report["fills"], pnl=report["pnl"],
                 stopped_early=report.get("stopped_early", False))
        return report
    except asyncio.CancelledError:
        log.error("stopped_without_report")
        return None
    finally:
        for sig in STOP_SIGNALS:
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass


def prepare_out(out: Path, state_dir: Path | None = None) -> Path:
    """Check the out directory is usable (StartupError naming it) and set an earlier run's
    artifacts aside, keeping the state dir's journal when both are the same directory."""
    usable_dir(out, "out directory")
    same = state_dir is not None and out.resolve() == state_dir.resolve()
    moved = set_aside_previous(out, keep=("journal.jsonl",) if same else ())
    if moved:
        log.info("previous_run_set_aside", out=str(out), files=moved)
    return out


def _event_loop_runner(cfg: Any) -> Any:
    """uvloop for sessions that wait on sockets (paper, live, a remote venue); a replay against
    the in-process simulated venue does no I/O in its loop (one `sleep(0)` per batch), so it keeps
    asyncio's own loop and skips importing uvloop (start-up time)."""
    if cfg.daemon.mode == "replay" and cfg.venue.name == "sim":
        return asyncio.run
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # uvloop is a dependency; this keeps odd platforms working
        return asyncio.run


def run_main(cfg: Any, data: list[str], out: Path,
             state_dir: Path | None = None) -> dict[str, Any] | None:
    # the in-process simulated exchange forgets everything with the process: settle against
    # its empty book now; a remote broker is asked about each in-flight order once connected
    remote = cfg.venue.name != "sim"
    prepared = (prepare_state(state_dir, fsync=cfg.report.journal_fsync,
                              venue_orders=None if remote else ())
                if state_dir is not None else None)
    try:
        prepare_out(out, state_dir)
        return _event_loop_runner(cfg)(_main(cfg, data, out, prepared))
    finally:
        if prepared is not None:
            prepared.release()
