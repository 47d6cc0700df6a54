"""Configuration of the feature matrices (spec sections on each indicator), apart from the kernels.

The daemon's config (`daemon/config.py`) reads these Structs for every command; keeping them out of
the kernel modules means loading a config (or a replay with matrices off) never imports numba's
matrix kernels. Each kernel module re-exports its own config class under the old name.
"""

from __future__ import annotations

import msgspec
import numpy as np

from himari.daemon.configbase import ConfigError, check_range

FVG_VALID_FROM = 2  # the first bar index with a complete 3-bar gap pattern


class FvgConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    lookback: int = 20
    body_multiplier: float = 1.5
    max_age: int = 50
    max_gaps_per_side: int = 50
    level_clip_pct: float = 2.0
    age_decay: float = 10.0

    def __post_init__(self) -> None:
        check_range("fvg.lookback", self.lookback, 1, 10_000)
        check_range("fvg.body_multiplier", self.body_multiplier, 0.0, 1e6, lo_open=True)
        check_range("fvg.max_age", self.max_age, 1, 1_000_000)
        check_range("fvg.max_gaps_per_side", self.max_gaps_per_side, 1, 100_000)
        check_range("fvg.level_clip_pct", self.level_clip_pct, 0.0, 1e6, lo_open=True)
        check_range("fvg.age_decay", self.age_decay, 0.0, 1e9, lo_open=True)


class ProfileConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    window: int = 48
    bins: int = 24
    lvn_max_frac_of_poc: float = 0.7
    max_distance_pct: float = 2.0

    def __post_init__(self) -> None:
        check_range("strategic.profile.window", self.window, 1, 100_000)
        check_range("strategic.profile.bins", self.bins, 3, 100_000)
        check_range("strategic.profile.lvn_max_frac_of_poc", self.lvn_max_frac_of_poc, 0.0, 1.0,
                    lo_open=True)
        check_range("strategic.profile.max_distance_pct", self.max_distance_pct, 0.0, 1e6,
                    lo_open=True)

    @property
    def valid_from(self) -> int:
        return self.window - 1


class MlmiConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    k: int = 200
    trend: int = 20
    ma_fast: int = 5
    ma_slow: int = 20
    rsi_fast: int = 5
    rsi_slow: int = 20
    signal_wma: int = 20
    store_max: int = 10_000

    def __post_init__(self) -> None:
        check_range("strategic.mlmi.k", self.k, 1, 100_000)
        check_range("strategic.mlmi.trend", self.trend, 1, 10_000)
        check_range("strategic.mlmi.ma_fast", self.ma_fast, 1, 10_000)
        check_range("strategic.mlmi.ma_slow", self.ma_slow, 1, 10_000)
        check_range("strategic.mlmi.rsi_fast", self.rsi_fast, 1, 10_000)
        check_range("strategic.mlmi.rsi_slow", self.rsi_slow, 1, 10_000)
        check_range("strategic.mlmi.signal_wma", self.signal_wma, 1, 10_000)
        check_range("strategic.mlmi.store_max", self.store_max, 1, 10_000_000)

    @property
    def value_valid_from(self) -> int:
        """First bar whose query (p1, p2) is defined."""
        return max(self.rsi_slow, self.rsi_fast) + self.trend - 1

    @property
    def signal_valid_from(self) -> int:
        return self.value_valid_from + self.signal_wma


class MmdConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    test: int = 48
    reference: int = 240

    def __post_init__(self) -> None:
        check_range("strategic.mmd.test", self.test, 2, 100_000)
        check_range("strategic.mmd.reference", self.reference, 2, 100_000)

    @property
    def valid_from(self) -> int:
        return self.test + self.reference


class NwrqkConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    h: float = 8.0
    r: float = 8.0
    x0: int = 25
    value_clip_pct: float = 5.0
    slope_scale_pct: float = 0.1

    def __post_init__(self) -> None:
        check_range("strategic.nwrqk.h", self.h, 0.0, 1e6, lo_open=True)
        check_range("strategic.nwrqk.r", self.r, 0.0, 1e6, lo_open=True)
        check_range("strategic.nwrqk.x0", self.x0, 0, 100_000)
        check_range("strategic.nwrqk.value_clip_pct", self.value_clip_pct, 0.0, 1e6, lo_open=True)
        check_range("strategic.nwrqk.slope_scale_pct", self.slope_scale_pct, 0.0, 1e6, lo_open=True)

    @property
    def window(self) -> int:
        """Closes in the estimate: i = 0 .. x0 + 1."""
        return self.x0 + 2

    @property
    def value_valid_from(self) -> int:
        return self.window - 1

    @property
    def slope_valid_from(self) -> int:
        return self.window

    @property
    def change_valid_from(self) -> int:
        return self.window + 1


class VolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    short: int = 30
    long: int = 240

    def __post_init__(self) -> None:
        check_range("strategic.vol.short", self.short, 2, 100_000)
        check_range("strategic.vol.long", self.long, 2, 100_000)
        if self.long < self.short:
            raise ConfigError("strategic.vol.long", self.long, f">= strategic.vol.short ({self.short})")


class MomentumConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    n_short: int = 20
    scale_short_pct: float = 5.0
    n_long: int = 50
    scale_long_pct: float = 10.0

    def __post_init__(self) -> None:
        check_range("strategic.momentum.n_short", self.n_short, 1, 100_000)
        check_range("strategic.momentum.scale_short_pct", self.scale_short_pct, 0.0, 1e6, lo_open=True)
        check_range("strategic.momentum.n_long", self.n_long, 1, 100_000)
        check_range("strategic.momentum.scale_long_pct", self.scale_long_pct, 0.0, 1e6, lo_open=True)


class StrategicConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rows: int = 48
    mlmi: MlmiConfig = msgspec.field(default_factory=MlmiConfig)
    nwrqk: NwrqkConfig = msgspec.field(default_factory=NwrqkConfig)
    profile: ProfileConfig = msgspec.field(default_factory=ProfileConfig)
    momentum: MomentumConfig = msgspec.field(default_factory=MomentumConfig)
    mmd: MmdConfig = msgspec.field(default_factory=MmdConfig)
    vol: VolConfig = msgspec.field(default_factory=VolConfig)
    fvg: FvgConfig = msgspec.field(default_factory=FvgConfig)

    def __post_init__(self) -> None:
        check_range("strategic.rows", self.rows, 1, 100_000)

    def valid_from(self) -> np.ndarray:
        """First bar index at which each column is defined."""
        p = self.profile.valid_from
        return np.array([
            self.mlmi.value_valid_from, self.mlmi.signal_valid_from,
            self.nwrqk.value_valid_from, self.nwrqk.slope_valid_from, p, p,
            FVG_VALID_FROM, FVG_VALID_FROM, self.momentum.n_short, self.momentum.n_long,
            self.mmd.valid_from, self.vol.long, p], dtype=np.int64)

    @property
    def ready_from(self) -> int:
        return int(self.valid_from().max()) + self.rows - 1


class TacticalConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    momentum_n: int = 5
    momentum_clip: float = 10.0
    momentum_scale: float = 5.0
    volume_ema: int = 20
    rows: int = 60
    fvg: FvgConfig = msgspec.field(default_factory=FvgConfig)

    def __post_init__(self) -> None:
        check_range("tactical.momentum_n", self.momentum_n, 1, 10_000)
        check_range("tactical.momentum_clip", self.momentum_clip, 0.0, 1e6, lo_open=True)
        check_range("tactical.momentum_scale", self.momentum_scale, 0.0, 1e6, lo_open=True)
        check_range("tactical.volume_ema", self.volume_ema, 1, 10_000)
        check_range("tactical.rows", self.rows, 1, 100_000)
