"""Strategies, execution clients and the synergy detector, found by name or import path.

`daemon/` imports no strategy or broker module directly. A config names a plugin either by a short
name from the tables below (the ones this package ships) or by an import path
(`mypkg.mystrategy`), so adding an adapter or a strategy never edits `daemon/`. A plugin module
exposes `CONFIG` (its msgspec config Struct) and `build(...)`:
- strategy: `build(cfg, *, instrument, bus, clock, ids, cache) -> Strategy`
- venue (execution client): `build(cfg, instruments, clock=None, session="") -> ExecutionClient`
  (`session` is the daemon's id session: venue-side ids must not repeat across restarts)
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from himari.daemon.configbase import ConfigError

STRATEGIES = {"ema_cross": "himari.strategies.ema_cross",
              "buy_hold": "himari.strategies.buy_hold",
              "ensemble": "himari.strategies.ensemble"}
VENUES = {"sim": "himari.brokers.sim.plugin", "alpaca": "himari.brokers.alpaca.plugin"}
SYNERGY = "himari.strategies.synergy"
SANDBOX_CLI = "himari.brokers.sandbox.cli"  # `himari sandbox`: the local broker sandbox
# Named in configs already, built in a later release: refused with a reason, not "unknown".
NOT_YET = {"sandbox": "the local broker sandbox is not a venue: run `himari sandbox` and point "
                      "venue.name = \"alpaca\" at it (venue.params.base_url)"}

_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def resolve(table: dict[str, str], key: str, name: str) -> Any:
    """The plugin module for a short name or a dotted import path; ConfigError (exit 2) naming
    the key when it cannot be imported or is not a plugin."""
    path = table.get(name)
    if path is None and name in NOT_YET:
        raise ConfigError(key, name, f"available in this version: {', '.join(sorted(table))} "
                          f"({name}: {NOT_YET[name]}); paper trading on the simulated exchange "
                          "runs with daemon.mode = \"paper\" and venue.name = \"sim\"")
    if path is None:
        if not _MODULE_PATH.fullmatch(name):
            raise ConfigError(key, name, f"one of {', '.join(sorted(table))}, or an import path "
                              "such as 'mypackage.my_plugin'")
        path = name
    try:
        mod = importlib.import_module(path)
    except ImportError as exc:
        raise ConfigError(key, name, f"one of {', '.join(sorted(table))}, or an importable "
                          f"plugin module ({exc})") from None
    for attr in ("CONFIG", "build"):
        if not hasattr(mod, attr):
            raise ConfigError(key, name, f"a plugin module defining CONFIG and build(); "
                              f"{path} has no {attr}")
    return mod


def strategy_module(cfg: Any) -> Any:
    return resolve(STRATEGIES, "strategy.name", cfg.strategy.name)


def venue_module(cfg: Any) -> Any:
    return resolve(VENUES, "venue.name", cfg.venue.name)


def strategy_config(cfg: Any) -> Any:
    from himari.daemon.config import decode_section

    mod = strategy_module(cfg)
    decoded = decode_section(cfg.strategy.params, mod.CONFIG, "strategy.params")
    # A strategy that decides on the matrix stage's events would otherwise run silently idle.
    if getattr(mod, "NEEDS_MATRICES", False) and not cfg.matrices.enabled:
        from himari.daemon.configbase import ConfigError

        raise ConfigError("matrices.enabled", False,
                          f"true with strategy.name = {cfg.strategy.name!r} (it decides on the "
                          "feature matrices)")
    return decoded


def venue_config(cfg: Any) -> Any:
    from himari.daemon.config import decode_section

    mod = venue_module(cfg)
    return decode_section(cfg.venue.params, mod.CONFIG, "venue.params")


def synergy_config(cfg: Any) -> Any:
    from himari.daemon.config import decode_section

    mod = importlib.import_module(SYNERGY)
    return decode_section(cfg.matrices.synergy, mod.SynergyConfig, "matrices.synergy")


def synergy_detector(cfg: Any, ids: Any) -> Any:
    mod = importlib.import_module(SYNERGY)
    return mod.SynergyDetector(synergy_config(cfg), ids)


def sandbox_cli() -> Any:
    """The `himari sandbox` subcommand (add_parser, main), found by import path."""
    return importlib.import_module(SANDBOX_CLI)
