"""Configuration of the in-process simulated venue."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from himari.daemon.configbase import ConfigError, check_choice, check_range


class SimVenueConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    latency_ms: float = 0.0  # order (and cancel) reaches the matching engine this long after it was sent
    ack_latency_ms: float = 0.0  # acks, rejects, fills, cancels reach the order manager this late
    slippage_ticks: int = 0  # market and triggered stop orders fill this many ticks worse
    taker_fee_bps: Decimal = Decimal("1.0")  # fee on notional for orders that take liquidity
    maker_fee_bps: Decimal = Decimal("0.0")  # fee on notional for resting limit fills
    fee_quantum: Decimal = Decimal("0.00000001")  # fees are rounded half-even to this
    limit_fill: str = "trade_size"  # trade_size: a limit fill is capped by the trade's size; full
    max_working_orders: int = 1024

    def __post_init__(self) -> None:
        check_range("venue.params.latency_ms", self.latency_ms, 0.0, 60_000.0)
        check_range("venue.params.ack_latency_ms", self.ack_latency_ms, 0.0, 60_000.0)
        check_range("venue.params.slippage_ticks", self.slippage_ticks, 0, 1_000_000)
        for key, value in (("venue.params.taker_fee_bps", self.taker_fee_bps),
                           ("venue.params.maker_fee_bps", self.maker_fee_bps)):
            if not value.is_finite() or not (Decimal(-100) <= value <= Decimal(1000)):
                raise ConfigError(key, str(value), "a number of basis points in [-100, 1000]")
        if not self.fee_quantum.is_finite() or self.fee_quantum <= 0:
            raise ConfigError("venue.params.fee_quantum", str(self.fee_quantum), "a positive decimal")
        check_choice("venue.params.limit_fill", self.limit_fill, ("trade_size", "full"))
        check_range("venue.params.max_working_orders", self.max_working_orders, 1, 1_000_000)
