"""Composition root: which runner a session gets, from config.

- `daemon.mode = "replay"` (and `himari replay`): the replay runner (`runners/replay.py`) on event
  time over recorded or synthetic ticks.
- `daemon.mode = "paper"` with the simulated execution client: the live runner
  (`runners/live.py`) on the wall clock, fed by a paced data client (paper-sim).
The trading core both drive is built in one place, `engine.py`.
"""

from __future__ import annotations

from himari.daemon.runners.replay import ReplaySession, build_session, run_replay, warmup

Session = ReplaySession

__all__ = ["ReplaySession", "Session", "build_session", "run_replay", "warmup"]
