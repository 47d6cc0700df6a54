"""Registers the simulated venue with the daemon (see daemon/plugins.py)."""

from __future__ import annotations

from himari.brokers.sim import matching
from himari.brokers.sim.config import SimVenueConfig
from himari.brokers.sim.venue import SimVenue
from himari.daemon.instruments import Instrument

CONFIG = SimVenueConfig


class WarmSimVenue(SimVenue):
    def warmup(self) -> None:
        matching.warmup()


def build(cfg: SimVenueConfig, instruments: dict[str, Instrument], clock: object = None) -> SimVenue:
    return WarmSimVenue(cfg, instruments)
