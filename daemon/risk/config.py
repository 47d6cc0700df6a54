"""Risk configuration: the `[risk]` section (spec risk-execution-xai.md sections 1.2, 1.3, 1.7, 1.9).

Units follow the config's user-facing convention: percentages are percent (2.0 = 2 %), money is a
Decimal in the account currency, durations are seconds. The engine converts percentages once to
integer parts-per-million of a fraction (2.0 % -> 20,000 ppm), so every limit comparison in the hot
path is exact integer arithmetic; percentages therefore resolve to 1e-4 percent.

Boundaries: a size limit (lots, notional, collar, rate) is an allowed value, so reaching it passes and
exceeding it rejects; a loss limit (daily loss, drawdown) is a stop, so reaching it rejects.

Several instruments: `[risk]` holds the defaults every instrument's engine uses; an optional
`[risk.instruments.<ID>]` table overrides any of the same keys for one instrument (keys it omits
inherit from `[risk]`; `RiskConfig.for_instrument(id)` resolves them). `[risk.portfolio]` holds the
limits over all instruments together; their defaults (0 = off) never bind.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

import msgspec

from himari.daemon.configbase import ConfigError, check_range

_SECTION = "risk"


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The keys of `[risk]` that one instrument's engine uses (and a per-instrument table may
    override)."""

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
    # c, fees for entry + exit per contract (one unit of quantity: a contract, share or coin), in
    # currency; the engine charges round_trip_fee x lot_size per lot
    round_trip_fee: Decimal = Decimal("0")

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


_LIMIT_FIELDS = msgspec.structs.fields(RiskLimits)

# `[risk.instruments.<ID>]`: every key of RiskLimits, optional; None inherits from `[risk]`.
RiskOverride = msgspec.defstruct(
    "RiskOverride", [(f.name, f.type | None, None) for f in _LIMIT_FIELDS],
    kw_only=True, frozen=True, forbid_unknown_fields=True, module=__name__)


class PortfolioRiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[risk.portfolio]`: limits over every instrument of the session (one account currency).
    0 switches a limit off, the default, so a single-instrument session is unchanged."""

    # sum over instruments of worst-case |position| x price x point value (currency); 0 = none
    max_gross_notional: Decimal = Decimal(0)
    # account equity drawdown from its high-water mark that halts every engine (percent); 0 = off
    max_drawdown_pct: float = 0.0

    def __post_init__(self) -> None:
        _check_money(f"{_SECTION}.portfolio.max_gross_notional", self.max_gross_notional,
                     positive=False)
        key = f"{_SECTION}.portfolio.max_drawdown_pct"
        if not math.isfinite(self.max_drawdown_pct):
            raise ConfigError(key, self.max_drawdown_pct, "a finite number")
        check_range(key, self.max_drawdown_pct, 0.0, 100.0)


class RiskConfig(RiskLimits, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[risk]` section: the per-instrument defaults, the overrides and the portfolio limits."""

    # `[risk.instruments.<ID>]` tables as written; checked in __post_init__ (msgspec's own errors
    # would not name the instrument) and resolved by `for_instrument`
    instruments: dict[str, dict[str, Any]] = {}
    portfolio: PortfolioRiskConfig = msgspec.field(default_factory=PortfolioRiskConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        for instrument_id in self.instruments:  # every resolved table is checked at load time
            self.for_instrument(instrument_id)

    def for_instrument(self, instrument_id: str) -> RiskConfig:
        """The limits for one instrument: `[risk]` with `[risk.instruments.<ID>]` laid over it.
        Raises ConfigError naming `risk.instruments.<ID>.<key>` for a bad override."""
        table = self.instruments.get(instrument_id)
        if table is None:
            return self
        prefix = f"{_SECTION}.instruments.{instrument_id}"
        override = _decode_override(prefix, table)
        values = {f.name: getattr(self, f.name) for f in _LIMIT_FIELDS}
        for f in _LIMIT_FIELDS:
            value = getattr(override, f.name)
            if value is not None:
                values[f.name] = value
        try:
            return RiskConfig(**values, portfolio=self.portfolio)
        except ConfigError as exc:
            name = exc.key.removeprefix(f"{_SECTION}.")
            raise ConfigError(f"{prefix}.{name}", exc.value, exc.allowed) from None


def _decode_override(prefix: str, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(prefix, table, "a table of [risk] keys")
    try:
        return msgspec.convert(table, RiskOverride, strict=False)
    except msgspec.ValidationError as exc:
        text, _, at = str(exc).rpartition(" - at `$.")
        unknown = re.match(r"Object contains unknown field `([^`]+)`", text or str(exc))
        if unknown:
            name = unknown.group(1)
            raise ConfigError(f"{prefix}.{name}", table.get(name),
                              "unknown key; allowed keys here: "
                              + ", ".join(f.name for f in _LIMIT_FIELDS)) from None
        name = at.rstrip("`")
        raise ConfigError(f"{prefix}.{name}" if text else prefix, table.get(name),
                          text or str(exc)) from None
