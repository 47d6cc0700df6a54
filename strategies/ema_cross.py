"""The reference EMA cross, used to check the pipeline against other platforms.

Rules (the common ones): EMA with alpha = 2 / (period + 1), seeded with the first close; ready once
`slow` bars have been seen; bars whose open, high, low and close are all equal are skipped. On each
bar: if fast >= slow, be long `quantity` (buy when flat, close the short and buy when short);
otherwise be short. Market orders of a fixed size. On stop it closes any open position, so a
replay's PnL is realized.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from himari.daemon.bus import Bus
from himari.daemon.cache import Cache
from himari.daemon.clock import Clock
from himari.daemon.configbase import ConfigError, check_range
from himari.daemon.events import Bar
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.strategies.base import Strategy, check_quantity_and_bar_spec, quantity_lots


class EmaCrossConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fast: int = 10
    slow: int = 30
    quantity: Decimal = Decimal(1)  # in instrument units; must be a whole number of lots
    bar_spec: str = "250t"

    def __post_init__(self) -> None:
        check_range("strategy.params.fast", self.fast, 1, 10_000)
        check_range("strategy.params.slow", self.slow, 2, 10_000)
        if self.fast >= self.slow:
            raise ConfigError("strategy.params.fast", self.fast,
                              f"an integer smaller than slow ({self.slow})")
        check_quantity_and_bar_spec(self.quantity, self.bar_spec)


class EmaCross(Strategy):
    def __init__(self, cfg: EmaCrossConfig, instrument_id: str, lots: int, bus: Bus, clock: Clock,
                 ids: IdSource, cache: Cache | None = None, strategy_id: str = "ema_cross") -> None:
        super().__init__(strategy_id, instrument_id, bus, clock, ids, cache)
        self.cfg = cfg
        self.lots = lots
        self._a_fast = 2.0 / (cfg.fast + 1)
        self._a_slow = 2.0 / (cfg.slow + 1)
        self.fast: float | None = None
        self.slow: float | None = None
        self.bars_seen = 0
        self.bars_skipped = 0
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
        if bar.open == bar.high == bar.low == bar.close:
            self.bars_skipped += 1
            return
        close = float(bar.close)  # ticks: the cross is scale-free, so no conversion is needed
        if self.fast is None or self.slow is None:
            self.fast = self.slow = close
        else:
            self.fast += self._a_fast * (close - self.fast)
            self.slow += self._a_slow * (close - self.slow)
        self.bars_seen += 1
        self._last_bar_id = bar.event_id
        if self.bars_seen < self.cfg.slow:
            return
        if self.fast >= self.slow:
            self.order_towards(self.lots, bar.event_id, reason="fast EMA >= slow EMA")
        else:
            self.order_towards(-self.lots, bar.event_id, reason="fast EMA < slow EMA")

    def on_stop(self) -> None:
        self.flatten(self._last_bar_id or "stop")


# ---- plugin interface (daemon/plugins.py)

CONFIG = EmaCrossConfig


def build(cfg: EmaCrossConfig, *, instrument: Instrument, bus: Bus, clock: Clock,
          ids: IdSource, cache: Cache | None = None, strategy_id: str = "ema_cross") -> EmaCross:
    lots = quantity_lots(instrument, cfg.quantity)
    return EmaCross(cfg, instrument.id, lots, bus, clock, ids, cache, strategy_id)
