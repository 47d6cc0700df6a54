"""The portfolio: the account, its equity in one currency, and the equity curve.

Positions and PnL are kept per instrument in that instrument's quote currency (exact, see
`orders/positions.py`). The account has one currency; an instrument quoted in another is converted
at a rate stated in config (`account.fx_rates`, units of account currency per unit of the quote
currency). A session that mixes currencies without a stated rate refuses to start (exit 2): adding
yen to a dollar account silently is the bug this replaces.

On the hot path (handler "portfolio", order 10, so risk sees the close before a strategy decides):
each bar feeds its instrument's ATR; each close of the curve's bar spec marks that instrument,
recomputes equity, hands it to risk (drawdown, daily loss, kill switch) and samples the equity curve.
Each closed round trip is handed to its instrument's risk engine (Kelly inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from himari.daemon.bus import Bus
from himari.daemon.cache import Cache
from himari.daemon.configbase import ConfigError
from himari.daemon.events import Bar, PositionUpdate
from himari.daemon.report.metrics import EquityCurve


class RiskInputs(Protocol):
    """What the portfolio tells risk (`risk/portfolio.py`: routed per instrument)."""

    def on_bar(self, bar: Bar) -> None: ...

    def on_equity(self, equity: Decimal, ts_ns: int) -> None: ...

    def on_trade_closed(self, instrument_id: str, pnl: Decimal) -> None: ...


def fx_rates_for(instruments: Any, currency: str, rates: dict[str, Decimal]) -> dict[str, Decimal]:
    """Rate per instrument (account currency per quote-currency unit); ConfigError when a
    currency has no stated rate."""
    out: dict[str, Decimal] = {}
    for inst in instruments:
        if inst.currency == currency:
            out[inst.id] = Decimal(1)
        elif inst.currency in rates:
            out[inst.id] = rates[inst.currency]
        else:
            raise ConfigError(
                "account.fx_rates", f"{{}} (no rate for {inst.currency})",
                f"a rate for {inst.currency}: instrument {inst.id} is quoted in {inst.currency} "
                f"but the account is in {currency}; set e.g. --set account.fx_rates.{inst.currency}"
                f"=<{currency} per {inst.currency}>, or set account.currency = "
                f"\"{inst.currency}\"")
    return out


class Portfolio:
    def __init__(self, bus: Bus, cache: Cache, *, starting_cash: Decimal, currency: str,
                 fx_rates: dict[str, Decimal], curve_spec: str, risk: RiskInputs) -> None:
        self.cache = cache
        self.starting_cash = starting_cash
        self.currency = currency
        self.rates = fx_rates_for(cache.instruments.values(), currency, fx_rates)
        self.curve_spec = curve_spec
        self.curve = EquityCurve()
        self.risk = risk
        self._trips_seen = 0
        self._single = len(cache.instruments) == 1
        self._first = next(iter(cache.instruments), None)  # its mark goes on the curve
        cache.portfolio = self
        bus.subscribe(Bar, self.on_bar, name="portfolio", order=10)
        bus.subscribe(PositionUpdate, self.on_position, name="portfolio.trades", order=10)

    # ---- money

    def equity(self) -> Decimal:
        """starting cash + realized + unrealized - fees, every instrument converted."""
        book = self.cache.positions
        if self._single and not any(r != 1 for r in self.rates.values()):
            return book.equity(self.starting_cash)  # one instrument, one currency: the fast path
        total = self.starting_cash
        for inst_id, rate in self.rates.items():
            pos = book.get(inst_id)
            if pos is None:
                continue
            inst = self.cache.instruments[inst_id]
            total += (inst.money(pos.realized + pos.unrealized) - pos.fees) * rate
        return total

    def realized_pnl(self) -> Decimal:
        return self._converted(self.cache.positions.realized_pnl)

    def unrealized_pnl(self) -> Decimal:
        return self._converted(self.cache.positions.unrealized_pnl)

    def fees(self) -> Decimal:
        return self._converted(self.cache.positions.fees)

    def _converted(self, per_instrument: Callable[[str], Decimal]) -> Decimal:
        return sum((per_instrument(i) * r for i, r in self.rates.items()), Decimal(0))

    def exposure_lots(self) -> int:
        """Gross open lots over all instruments (the curve's 'in a position' flag)."""
        return sum(abs(self.cache.position(i)) for i in self.cache.instruments)

    # ---- hot-path handlers

    def on_bar(self, bar: Bar) -> None:
        self.risk.on_bar(bar)
        if bar.spec != self.curve_spec:
            return
        self.cache.positions.mark(bar.instrument_id, bar.close)
        self.mark_equity(bar.ts_ns)

    def mark_equity(self, ts_ns: int, *, notify_risk: bool = True) -> Decimal:
        equity = self.equity()
        if notify_risk:
            self.risk.on_equity(equity, ts_ns)
        pos = self.cache.positions.get(self._first) if self._first is not None else None
        mark = pos.mark if pos is not None and pos.mark is not None else -1
        self.curve.append(ts_ns, float(equity), self.exposure_lots(), mark)
        return equity

    def restored(self) -> None:
        """After a journal restore: its round trips are history, not news for risk."""
        self._trips_seen = len(self.cache.positions.round_trips)

    def on_position(self, ev: PositionUpdate) -> None:
        trips = self.cache.positions.round_trips
        while self._trips_seen < len(trips):
            trip = trips[self._trips_seen]
            self._trips_seen += 1
            self.risk.on_trade_closed(trip.instrument_id, trip.net_pnl)
