"""Registers the Alpaca adapter with the daemon (see daemon/plugins.py).

`build` returns the `AlpacaExecutionClient` (Trading API v2 REST + `trade_updates` stream);
`build_data` the `AlpacaDataClient` (market data stream). Both read their keys from the
environment variables the config names, on `connect()`.
"""

from __future__ import annotations

from himari.brokers.alpaca.client import AlpacaExecutionClient
from himari.brokers.alpaca.config import AlpacaConfig
from himari.brokers.alpaca.data import AlpacaDataClient
from himari.daemon.clock import Clock
from himari.daemon.instruments import Instrument

CONFIG = AlpacaConfig


def build(cfg: AlpacaConfig, instruments: dict[str, Instrument],
          clock: Clock | None = None, session: str = "") -> AlpacaExecutionClient:
    """`session`: the daemon's id session (client order ids come from the order manager)."""
    return AlpacaExecutionClient(cfg, instruments, clock, session)


def build_data(cfg: AlpacaConfig, instruments: dict[str, Instrument],
               clock: Clock | None = None) -> AlpacaDataClient:
    return AlpacaDataClient(cfg, instruments, clock)
