"""Registers the simulated exchange with the daemon (see daemon/plugins.py).

`build` returns the `SimExecutionClient`; its matching engine is `.matching` (the replay runner
drives it; the client also forwards `next_execution` / `execute_at` / `end_of_data`). Pass the
session's `clock` so acknowledgements and fills can arrive with `ack_latency_ms`; without a clock
they are delivered synchronously and `ack_latency_ms` must be 0.
"""

from __future__ import annotations

from himari.brokers.sim.client import SimExecutionClient
from himari.brokers.sim.config import SimVenueConfig
from himari.daemon.clock import Clock
from himari.daemon.instruments import Instrument

CONFIG = SimVenueConfig


def build(cfg: SimVenueConfig, instruments: dict[str, Instrument],
          clock: Clock | None = None, session: str = "") -> SimExecutionClient:
    """`session`: the daemon's id session, so execution ids stay unique across restarts."""
    return SimExecutionClient(cfg, instruments, clock, session)
