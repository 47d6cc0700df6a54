"""Strategies, venues and the synergy detector, registered by name from config.

`daemon/` imports no strategy or broker module directly: the config names a plugin and this table
says where it lives. Each plugin module exposes `CONFIG` (its msgspec config Struct) and `build(...)`.
"""

from __future__ import annotations

import importlib
from typing import Any

from himari.daemon.configbase import ConfigError

STRATEGIES = {"ema_cross": "himari.strategies.ema_cross"}
VENUES = {"sim": "himari.brokers.sim.plugin"}
SYNERGY = "himari.strategies.synergy"


def _module(table: dict[str, str], key: str, name: str) -> Any:
    if name not in table:
        raise ConfigError(key, name, f"one of {', '.join(sorted(table))}")
    return importlib.import_module(table[name])


def strategy_module(cfg: Any) -> Any:
    return _module(STRATEGIES, "strategy.name", cfg.strategy.name)


def venue_module(cfg: Any) -> Any:
    return _module(VENUES, "venue.name", cfg.venue.name)


def strategy_config(cfg: Any) -> Any:
    from himari.daemon.config import decode_section

    mod = strategy_module(cfg)
    return decode_section(cfg.strategy.params, mod.CONFIG, "strategy.params")


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
