"""Compatibility name: the simulated venue is now the `SimExecutionClient` (client.py) over a
`MatchingEngine` (engine.py)."""

from __future__ import annotations

from himari.brokers.sim.client import SimExecutionClient

SimVenue = SimExecutionClient

__all__ = ["SimVenue", "SimExecutionClient"]
