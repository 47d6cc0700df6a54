"""Risk configuration: the `[risk]` section (spec risk-execution-xai.md sections 1.2, 1.3, 1.7, 1.9).

Units follow the config's user-facing convention: percentages are percent (2.0 = 2 %), money is a
Decimal in the account currency, durations are seconds. The engine converts percentages once to
integer parts-per-million of a fraction (2.0 % -> 20,000 ppm), so every limit comparison in the hot
path is exact integer arithmetic; percentages therefore resolve to 1e-4 percent.

Boundaries: a size limit (lots, notional, collar, rate) is an allowed value, so reaching it passes and
exceeding it rejects; a loss limit (daily loss, drawdown) is a stop, so reaching it rejects.
"""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec

from himari.daemon.configbase import ConfigError, check_range

_SECTION = "risk"


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # ---- limits (spec 1.7)
    # Quantities in instrument units (contracts, shares, coins); the engine converts them to
    # whole lots of the instrument, rounding down.
    max_position: Decimal = Decimal(10)  # max |net position| after an order that increases it
    max_order_quantity: Decimal = Decimal(5)  # max per order and per sizing decision
    max_notional: Decimal = Decimal("500000")  # max |position| x price x point value, currency
    price_collar_pct: float = 5.0  # reference price within +-collar of the last trade price
    max_orders_per_minute: int = 60  # approved orders in any sliding 60 s of event time
    daily_loss_limit_pct: float = 2.0  # of start-of-UTC-day equity; blocks entries until next day
    max_drawdown_pct: float = 5.0  # from the equity high-water mark; trips the kill switch
    stale_data_s: float = 0.0  # refuse entries when the last trade is older; 0 disables

    # ---- sizing (spec 1.2 "[P] Sizing algorithm the daemon implements")
    kelly_fraction: float = 0.25  # k, fractional Kelly
    per_trade_risk_pct: float = 2.0  # cap on f, percent of equity at risk per trade
    kelly_window_trades: int = 100  # the "last N closed trades" the win rate and payoff come from
    round_trip_fee: Decimal = Decimal("0")  # c, fees per contract for entry + exit, currency

    # ---- stops and targets (spec 1.3 "[P] Unified model")
    stop_atr_mult: float = 1.5  # m_SL, allowed [0.5, 3]
    target_atr_mult: float = 3.0  # m_TP, allowed [1, 5]
    atr_period: int = 14  # Wilder ATR period on the bars fed to the engine
    atr_bar_spec: str = "5m"  # only bars with this `Bar.spec` feed the ATR; "" = every bar
    bracket_fixed_size: bool = False  # plan an ATR bracket for fixed-size entries that asked for none

    # ---- account
    starting_equity: Decimal = Decimal("100000")  # equity until the first on_equity update

    def __post_init__(self) -> None:
        def key(name: str) -> str:
            return f"{_SECTION}.{name}"

        for name in ("price_collar_pct", "daily_loss_limit_pct", "max_drawdown_pct", "stale_data_s",
                     "kelly_fraction", "per_trade_risk_pct", "stop_atr_mult", "target_atr_mult"):
            value = getattr(self, name)
            if not math.isfinite(value):  # NaN slips through range comparisons
                raise ConfigError(key(name), value, "a finite number")

        _check_money(key("max_position"), Decimal(self.max_position), positive=True)
        _check_money(key("max_order_quantity"), Decimal(self.max_order_quantity), positive=True)
        _check_money(key("max_notional"), self.max_notional, positive=True)
        check_range(key("price_collar_pct"), self.price_collar_pct, 0.0, 100.0, lo_open=True)
        check_range(key("max_orders_per_minute"), self.max_orders_per_minute, 1, 100_000)
        check_range(key("daily_loss_limit_pct"), self.daily_loss_limit_pct, 0.0, 100.0,
                    lo_open=True)
        check_range(key("max_drawdown_pct"), self.max_drawdown_pct, 0.0, 100.0, lo_open=True)
        check_range(key("stale_data_s"), self.stale_data_s, 0.0, 86_400.0)
        check_range(key("kelly_fraction"), self.kelly_fraction, 0.0, 1.0, lo_open=True)
        check_range(key("per_trade_risk_pct"), self.per_trade_risk_pct, 0.0, 100.0, lo_open=True)
        check_range(key("kelly_window_trades"), self.kelly_window_trades, 30, 100_000)
        _check_money(key("round_trip_fee"), self.round_trip_fee, positive=False)
        check_range(key("stop_atr_mult"), self.stop_atr_mult, 0.5, 3.0)
        check_range(key("target_atr_mult"), self.target_atr_mult, 1.0, 5.0)
        check_range(key("atr_period"), self.atr_period, 1, 10_000)
        _check_money(key("starting_equity"), self.starting_equity, positive=True)


def _check_money(key: str, value: Decimal, *, positive: bool) -> None:
    if not value.is_finite() or value < 0 or (positive and value == 0):
        raise ConfigError(key, str(value), "a finite amount > 0" if positive else "a finite amount >= 0")


def pct_to_ppm(pct: float) -> int:
    """Percent to integer parts per million of a fraction: 2.0 -> 20,000 (resolution 1e-4 %)."""
    return int(round(pct * 10_000.0))
