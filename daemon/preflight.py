"""What a session needs before it starts, checked without starting anything.

`preflight(cfg, data, open_data)` is the one validation `himari check-config` and `himari run`
share, so check-config accepts exactly what run accepts. Beyond decoding the config (done by
`load_config`) it refuses, as a ConfigError (exit 2):

- a mode this build cannot run (`app.check_mode`);
- `feed.kind = "file"` with no files, and a data file that does not exist;
- with `open_data` (check-config): a data file the feed cannot read (a header only, every row
  malformed: the FeedError) and the instruments the session would trade, so that the strategy's
  order quantity must be a whole number of lots (a fractional quantity below the lot size);
- a venue whose credentials come from environment variables (venue.params `*_env` keys) when a
  variable is not set. Only the variable's name is shown, never a value.

`run` calls it with `open_data=False`: the session opens the data itself right after, with the
same code, and a second parse would double the start-up.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import msgspec

from himari.daemon.config import HimariConfig
from himari.daemon.configbase import ConfigError


def _credential_envs(cfg: HimariConfig) -> list[tuple[str, str]]:
    from himari.daemon import plugins

    venue = plugins.venue_config(cfg)
    if not isinstance(venue, msgspec.Struct):
        return []
    return [(f"venue.params.{f.name}", getattr(venue, f.name)) for f in msgspec.structs.fields(venue)
            if f.name.endswith("_env") and isinstance(getattr(venue, f.name), str)
            and getattr(venue, f.name)]


def _instruments(cfg: HimariConfig, data: list[str]) -> dict[str, Any]:
    from himari.daemon.sources import BrokerSource, open_source

    if cfg.feed.kind == "broker" and cfg.daemon.mode != "replay":
        return BrokerSource(cfg).instruments
    return open_source(cfg, data).instruments


def _check_quantity(cfg: HimariConfig, instruments: dict[str, Any]) -> None:
    from himari.daemon import plugins
    from himari.daemon.instruments import InstrumentError

    params = plugins.strategy_config(cfg)
    quantity = getattr(params, "quantity", None)
    if quantity is None:
        return
    for inst in instruments.values():
        try:
            lots = inst.qty_to_lots(Decimal(str(quantity)))
        except InstrumentError as exc:
            raise ConfigError("strategy.params.quantity", str(quantity), str(exc)) from None
        if lots <= 0:
            raise ConfigError("strategy.params.quantity", str(quantity), "at least one lot")


def preflight(cfg: HimariConfig, data: list[str] | None = None, *, open_data: bool = True) -> None:
    from himari.daemon.app import check_mode
    from himari.daemon.sources import check_data_paths, data_paths

    check_mode(cfg)
    broker = cfg.feed.kind == "broker" and cfg.daemon.mode != "replay"
    paths = [] if broker else data_paths(cfg, list(data or []))
    check_data_paths(paths, cfg.instrument.id, "DATA" if data else "feed.paths")
    if cfg.daemon.mode != "replay":
        for key, name in _credential_envs(cfg):
            if not os.environ.get(name):
                raise ConfigError(key, name, "the name of an environment variable that is set: the "
                                  "venue reads its credentials from it, and it is not set here")
    if open_data:
        _check_quantity(cfg, _instruments(cfg, paths))
