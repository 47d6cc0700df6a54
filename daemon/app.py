"""Composition root: which runner a session gets, from config.

- `daemon.mode = "replay"` (and `himari replay`): the replay runner (`runners/replay.py`) on event
  time over recorded or synthetic ticks.
- `daemon.mode = "paper"` with the simulated exchange (`venue.name = "sim"`): the live runner
  (`runners/live.py`) on the wall clock, fed by a paced data client (paper-sim).
- `daemon.mode = "paper"` with a broker's execution client (`venue.name = "alpaca"`, pointed at
  Alpaca's paper API or the local sandbox) and `feed.kind = "broker"`: the live runner on the
  wall clock with the broker's data client.
- `daemon.mode = "live"`: refused (exit 2) in this version.
The trading core both runners drive is built in one place, `engine.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from himari.daemon.config import HimariConfig
from himari.daemon.configbase import ConfigError
from himari.daemon.ids import IdSource
from himari.daemon.orders.recovery import RecoveredState
from himari.daemon.runners.replay import ReplaySession, build_session, run_replay, warmup

Session = ReplaySession

__all__ = ["ReplaySession", "Session", "build_session", "check_mode", "run_replay", "run_session",
           "warmup"]


def check_mode(cfg: HimariConfig) -> None:
    """Refuse (exit 2) a mode this build cannot run, before anything starts."""
    if cfg.daemon.mode == "live":
        raise ConfigError("daemon.mode", cfg.daemon.mode,
                          "'replay' or 'paper' in this version: live trading needs the broker "
                          "paths proven in paper first (a later release)")
    if cfg.daemon.mode == "paper" and cfg.venue.name != "sim" and cfg.feed.kind != "broker":
        raise ConfigError("feed.kind", cfg.feed.kind,
                          f"\"broker\" for paper trading on {cfg.venue.name}: its market data "
                          "comes from the broker (recorded or synthetic data pairs with "
                          "venue.name = \"sim\")")


async def run_session(cfg: HimariConfig, data_paths: list[str], out_dir: Path,
                      on_ready: Any = None, *, ids: IdSource | None = None,
                      journal_path: Path | None = None,
                      recovered: RecoveredState | None = None) -> dict[str, Any]:
    """Run one session. `recovered` (the state dir's journal, rebuilt) is adopted by a paper or
    live session before its first order; a replay recomputes everything from its data, so it only
    appends to the journal (with a fresh id session)."""
    check_mode(cfg)
    if cfg.daemon.mode == "replay":
        return await run_replay(cfg, data_paths, out_dir, on_ready, ids=ids,
                                journal_path=journal_path)
    from himari.daemon.runners.live import run_live

    return await run_live(cfg, out_dir, on_ready, ids=ids, journal_path=journal_path,
                          data_paths=data_paths, recovered=recovered)
