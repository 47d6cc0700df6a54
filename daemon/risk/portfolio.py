"""Risk across instruments: one `RiskEngine` per instrument plus the `[risk.portfolio]` limits.

Each instrument's engine keeps its own limits (`[risk]` with `[risk.instruments.<ID>]` over it),
market state (last tick, ATR) and Kelly history; account equity is shared and fed to every engine.
`validate` routes an intent to its instrument's engine after writing the portfolio's gross-notional
headroom into it, so the limit is one more check inside the engine's single numba call (and sizing
respects it). The portfolio limits (0 = off, the default, so one instrument behaves as before):

- `max_gross_notional`: sum over instruments of worst-case |position| x last price x point value
  (worst case: the filled position plus every non-reduce-only working order on one side, the larger
  side), in the account currency. An instrument without a price yet counts 0. An entry whose
  resulting worst-case exposure would push the sum over the limit is refused (`portfolio_notional`).
- `max_drawdown_pct`: account equity drawdown from its high-water mark (`on_equity`); reaching it
  halts every engine (the kill switch: exits still pass) until `resume()`.

Money here is exact: integer sums on a common decimal grid, one floor into the intent instrument's
tick*lot units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import structlog

from himari.daemon.events import Bar, OrderIntent, RiskVerdict, TickBatch
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.risk import kernels as K
from himari.daemon.risk.config import PortfolioRiskConfig, RiskConfig, pct_to_ppm
from himari.daemon.risk.engine import RiskEngine, to_micro

log = structlog.get_logger("himari.risk")

# instrument id -> (filled position, working buy leaves, working sell leaves), lots
Exposure = Callable[[str], tuple[int, int, int]]


class PortfolioRisk:
    def __init__(self, cfg: RiskConfig, instruments: Iterable[Instrument], ids: IdSource) -> None:
        engines = [RiskEngine(cfg, inst, ids) for inst in instruments]
        self._init(engines, cfg.portfolio, ids, cfg.starting_equity)

    @classmethod
    def of_engines(cls, engines: Iterable[RiskEngine], cfg: PortfolioRiskConfig,
                   ids: IdSource) -> PortfolioRisk:
        """Wrap engines built elsewhere (e.g. a single `RiskEngine` handed to the RiskGate)."""
        self = cls.__new__(cls)
        engines = list(engines)
        equity = engines[0].cfg.starting_equity if engines else Decimal(0)
        self._init(engines, cfg, ids, equity)
        return self

    def _init(self, engines: list[RiskEngine], cfg: PortfolioRiskConfig, ids: IdSource,
              equity: Decimal) -> None:
        self.engines: dict[str, RiskEngine] = {}
        for engine in engines:
            if engine.instrument.id in self.engines:
                raise ValueError(f"two risk engines for instrument {engine.instrument.id}")
            self.engines[engine.instrument.id] = engine
        self.cfg = cfg
        self._ids = ids
        self._gross_limit = cfg.max_gross_notional
        # Exact integer money: every tick value and the limit on one grid of 10**-places, so the
        # per-intent sum is Python int arithmetic (no Decimal context, no rounding).
        values = [e.instrument.tick_value for e in engines] + [cfg.max_gross_notional]
        places = max(0, *(-int(v.as_tuple().exponent) for v in values))
        self._scale = 10 ** places
        self._tv_units = {e.instrument.id: int(e.instrument.tick_value * self._scale)
                          for e in engines}
        self._limit_units = int(cfg.max_gross_notional * self._scale)
        self._legs = [(e.instrument.id, e, self._tv_units[e.instrument.id]) for e in engines]
        for engine in engines:
            engine.set_portfolio_headroom(K.I64_MAX, 0.0, float(cfg.max_gross_notional))
        self._dd_ppm = pct_to_ppm(cfg.max_drawdown_pct)
        self._equity = self._peak = equity
        self._halt_reason = ""
        self.rejected: dict[str, int] = {}

    @property
    def ids(self) -> IdSource:
        return self._ids

    def engine(self, instrument_id: str) -> RiskEngine | None:
        return self.engines.get(instrument_id)

    def warmup(self) -> None:
        for engine in self.engines.values():
            engine.warmup()

    # ------------------------------------------------------------------ inputs (routed)

    def on_last_tick(self, instrument_id: str, price_ticks: int, ts_ns: int) -> None:
        engine = self.engines.get(instrument_id)
        if engine is not None:
            engine.on_last_tick(price_ticks, ts_ns)

    def on_tick_batch(self, batch: TickBatch, stop: int | None = None) -> None:
        engine = self.engines.get(batch.instrument_id)
        if engine is not None:
            engine.on_tick_batch(batch, stop)

    def on_bar(self, bar: Bar) -> None:
        engine = self.engines.get(bar.instrument_id)
        if engine is not None:
            engine.on_bar(bar)

    def on_trade_closed(self, instrument_id: str, pnl: Decimal) -> None:
        engine = self.engines.get(instrument_id)
        if engine is not None:
            engine.on_trade_closed(pnl)

    def on_equity(self, equity: Decimal, ts_ns: int) -> None:
        """Account equity to every engine, then the portfolio drawdown (halts them all)."""
        for engine in self.engines.values():
            engine.on_equity(equity, ts_ns)
        self._equity = equity
        if equity > self._peak:
            self._peak = equity
        if self._dd_ppm and not self._halt_reason and K.loss_reaches(
                to_micro(self._peak), to_micro(equity), self._dd_ppm):
            dd = 100.0 * float(self._peak - equity) / float(self._peak) if self._peak > 0 else 100.0
            self.halt(f"portfolio max_drawdown: drawdown {dd:.4f}% from the high-water mark "
                      f"{self._peak} reached risk.portfolio.max_drawdown_pct "
                      f"{self.cfg.max_drawdown_pct:g}%")

    # ------------------------------------------------------------------ kill switch

    def halt(self, reason: str) -> None:
        """Halt every engine (each keeps the first reason it got). Exits still pass."""
        if not self._halt_reason:
            self._halt_reason = reason
            log.warning("risk_portfolio_halted", reason=reason, equity=str(self._equity),
                        peak=str(self._peak))
        for engine in self.engines.values():
            engine.halt(reason)

    def resume(self) -> None:
        """Operator reset of every engine; the portfolio high-water mark restarts at equity."""
        for engine in self.engines.values():
            engine.resume()
        self._halt_reason = ""
        self._peak = self._equity

    @property
    def halted(self) -> bool:
        """The portfolio kill switch is on, or any instrument's engine is halted."""
        return bool(self._halt_reason) or any(e.halted for e in self.engines.values())

    @property
    def halt_reason(self) -> str:
        return self._halt_reason

    def snapshot(self) -> dict[str, Any]:
        return {"halted": self.halted, "halt_reason": self._halt_reason,
                "peak_equity": str(self._peak), "rejected": dict(self.rejected),
                "instruments": {i: e.snapshot() for i, e in self.engines.items()}}

    # ------------------------------------------------------------------ validation

    def gross_notional(self, exposure: Exposure, skip: str = "") -> Decimal:
        """Worst-case gross notional of every instrument but `skip`, at its last price."""
        return Decimal(self._gross_units(exposure, skip)) / self._scale

    def _gross_units(self, exposure: Exposure, skip: str) -> int:
        total = 0
        for instrument_id, engine, tv_units in self._legs:
            if instrument_id == skip:
                continue
            position, buy, sell = exposure(instrument_id)
            worst = max(abs(position + buy), abs(position - sell))
            if worst:
                price = engine.last_price
                if price > 0:
                    total += worst * price * tv_units
        return total

    def validate(self, intent: OrderIntent, position_lots: int, ts_ns: int,
                 working_buy_lots: int = 0, working_sell_lots: int = 0,
                 exposure: Exposure | None = None) -> RiskVerdict:
        """Route to the intent's instrument engine with the portfolio headroom written into it.
        `exposure` answers for the other instruments (needed only with max_gross_notional)."""
        engine = self.engines.get(intent.instrument_id)
        if engine is None:
            self.rejected["instrument"] = self.rejected.get("instrument", 0) + 1
            return RiskVerdict(event_id=self._ids.next("RV"), ts_ns=ts_ns,
                               intent_id=intent.event_id, decision_id=intent.decision_id,
                               approved=False, quantity=0, rule="instrument",
                               reason=f"no risk engine for instrument {intent.instrument_id}; "
                               f"have {', '.join(self.engines) or 'none'}",
                               values={"value": 0.0, "limit": 0.0})
        if self._limit_units > 0:
            iid = intent.instrument_id
            other = self._gross_units(exposure, iid) \
                if exposure is not None and len(self.engines) > 1 else 0
            # floor((limit - other) / tick_value) in tick*lot units, exactly
            headroom = max(-1, min(K.I64_MAX, (self._limit_units - other) // self._tv_units[iid]))
            engine.set_portfolio_headroom(headroom, other / self._scale)
        return engine.validate(intent, position_lots, ts_ns, working_buy_lots, working_sell_lots)
