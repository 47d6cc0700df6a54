"""Buy and hold: the baseline every strategy is compared with in the walk-forward.

Goes long `quantity` on the first bar of `bar_spec` it sees (in a replay with `replay.history_s`,
the first bar after the warm-up, so it holds over exactly the traded period), holds, and closes on
stop, so its PnL is realized like every other row's (one entry fee and one exit fee).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from himari.daemon.bus import Bus
from himari.daemon.cache import Cache
from himari.daemon.clock import Clock
from himari.daemon.events import Bar
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.strategies.base import Strategy, check_quantity_and_bar_spec, quantity_lots


class BuyHoldConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    quantity: Decimal = Decimal(1)  # in instrument units; must be a whole number of lots
    bar_spec: str = "5m"

    def __post_init__(self) -> None:
        check_quantity_and_bar_spec(self.quantity, self.bar_spec)


class BuyHold(Strategy):
    def __init__(self, cfg: BuyHoldConfig, instrument_id: str, lots: int, bus: Bus, clock: Clock,
                 ids: IdSource, cache: Cache | None = None, strategy_id: str = "buy_hold") -> None:
        super().__init__(strategy_id, instrument_id, bus, clock, ids, cache)
        self.cfg = cfg
        self.lots = lots
        self._last_bar_id = ""

    @property
    def subscriptions(self) -> list[str]:
        return [self.cfg.bar_spec]

    def on_start(self, order: int = 50) -> None:
        super().on_start(order)
        self.bus.subscribe(Bar, self.on_bar, name=f"{self.strategy_id}.bar", order=order)

    def on_bar(self, bar: Bar) -> None:
        if bar.spec != self.cfg.bar_spec or bar.instrument_id != self.instrument_id:
            return
        if not self._last_bar_id:
            self.order_towards(self.lots, bar.event_id, reason="buy and hold")
        self._last_bar_id = bar.event_id

    def on_stop(self) -> None:
        self.flatten(self._last_bar_id or "stop")


# ---- plugin interface (daemon/plugins.py)

CONFIG = BuyHoldConfig


def build(cfg: BuyHoldConfig, *, instrument: Instrument, bus: Bus, clock: Clock,
          ids: IdSource, cache: Cache | None = None, strategy_id: str = "buy_hold") -> BuyHold:
    lots = quantity_lots(instrument, cfg.quantity)
    return BuyHold(cfg, instrument.id, lots, bus, clock, ids, cache, strategy_id)
