"""The simulated execution client: an `ExecutionClient` over the matching engine (`engine.py`).

Latency both ways, from config: an order (and a cancel) reaches the engine `latency_ms` after it
was sent (the order may match from then on); acknowledgements, rejects, fills, cancels and expiries
reach the listener `ack_latency_ms` after they happened at the venue, delivered through
`clock.set_timer`, so they are really asynchronous (a replay clock fires them in timestamp order as
it advances, the live clock on the wall clock). With no clock, or zero latency on a path, delivery is
synchronous (from inside `submit` / `cancel` / `execute_at`), exactly as a zero-latency venue.

The client keeps the venue's truth: per-instrument positions, every fill (execution ids `SIM-[<session>-]E-<n>`)
and every order's status, so it answers the reconciliation queries. A reduce-only order never opens
or increases the venue-side position: refused when it cannot reduce on arrival, clipped to the
position when it executes (the rest is cancelled).
Supported: market (gtc/ioc), limit and stop (gtc). Anything else is rejected with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

from himari.brokers.sim import matching
from himari.brokers.sim.config import SimVenueConfig
from himari.brokers.sim.engine import MatchingEngine, Working
from himari.daemon.clock import Clock
from himari.daemon.configbase import ConfigError
from himari.daemon.events import TickBatch
from himari.daemon.instruments import Instrument
from himari.daemon.venue import (AccountReport, ExecutionListener, FillReport, OrderRequest,
                                 OrderStatusReport, PositionReport)

_BPS = Decimal(10_000)
_TERMINAL = frozenset({"filled", "cancelled", "rejected", "expired"})


@dataclass(slots=True)
class _Status:
    request: OrderRequest
    venue_order_id: str
    status: str
    filled: int = 0
    ts_ns: int = 0
    ack_due: int = 0  # when its ack reaches the listener: later news of the order never precede it

    def report(self) -> OrderStatusReport:
        r = self.request
        return OrderStatusReport(client_order_id=r.client_order_id,
                                 venue_order_id=self.venue_order_id, instrument_id=r.instrument_id,
                                 side=r.side, quantity=r.quantity, filled=self.filled,
                                 status=self.status, ts_ns=self.ts_ns)


class SimExecutionClient:
    def __init__(self, cfg: SimVenueConfig, instruments: dict[str, Instrument],
                 clock: Clock | None = None, session: str = "") -> None:
        self.cfg = cfg
        # A simulated venue lives as long as the daemon; its ids carry the daemon's id session so
        # a restarted one never repeats an execution id booked (and journaled) before.
        self._tag = f"SIM-{session}-" if session else "SIM-"
        self.instruments = instruments
        self.clock = clock
        self._in_ns = int(cfg.latency_ms * 1_000_000)
        self._out_ns = int(cfg.ack_latency_ms * 1_000_000)
        if clock is None and self._out_ns:
            raise ConfigError("venue.params.ack_latency_ms", cfg.ack_latency_ms,
                              "0 when the simulated venue has no clock to deliver on")
        self.matching = MatchingEngine(cfg, self)
        self._listener: ExecutionListener | None = None
        self._status: dict[str, _Status] = {}
        self._fills: list[FillReport] = []
        self._positions: dict[str, int] = {}
        self._cash_ticks: dict[str, int] = {}  # per instrument: -sum(side * lots * price)
        self._fees = Decimal(0)
        self._last_price: dict[str, int] = {}
        self._pending: list[int] = []  # due times of timers not yet fired (deliveries, cancels)
        self._orders = 0
        self._execs = 0
        self.fills = 0
        self.rejects = 0

    # ---- ExecutionClient: commands

    def set_listener(self, listener: ExecutionListener) -> None:
        self._listener = listener

    @property
    def connected(self) -> bool:
        return True  # in process: never disconnected

    def submit(self, request: OrderRequest) -> None:
        listener = self._require_listener()
        arrival = request.ts_ns + self._in_ns
        reason = self._check(request)
        if reason:
            self.rejects += 1
            if request.client_order_id not in self._status:  # a duplicate keeps the original's
                self._status[request.client_order_id] = _Status(request, "", "rejected", 0,
                                                                arrival)
            self._deliver(request.ts_ns, self._in_ns + self._out_ns, listener.on_rejected,
                          request.client_order_id, reason)
            return
        self._orders += 1
        venue_id = f"{self._tag}{self._orders}"
        self._status[request.client_order_id] = _Status(request, venue_id, "accepted", 0, arrival,
                                                        arrival + self._out_ns)
        self.matching.add(request, arrival)
        self._deliver(request.ts_ns, self._in_ns + self._out_ns, listener.on_accepted,
                      request.client_order_id, venue_id)

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        if self._in_ns and self.clock is not None:
            self._later(ts_ns + self._in_ns, lambda due: self._cancel_now(client_order_id, due))
        else:
            self._cancel_now(client_order_id, ts_ns)

    # ---- ExecutionClient: status queries (answered from the venue's own records)

    async def query_order(self, client_order_id: str) -> OrderStatusReport | None:
        st = self._status.get(client_order_id)
        return st.report() if st is not None else None

    async def open_orders(self) -> list[OrderStatusReport]:
        return [s.report() for s in self._status.values() if s.status not in _TERMINAL]

    async def fills_since(self, ts_ns: int) -> list[FillReport]:
        return [f for f in self._fills if f.ts_ns >= ts_ns]

    async def positions(self) -> list[PositionReport]:
        return [PositionReport(instrument_id=i, quantity=q) for i, q in self._positions.items()]

    async def account(self) -> AccountReport:
        """Cash and equity relative to the start of the session (the sim holds no deposit)."""
        cash = -self._fees
        equity = cash
        currency = next(iter(self.instruments.values())).currency if self.instruments else ""
        for inst_id, ticks in self._cash_ticks.items():
            inst = self.instruments[inst_id]
            cash += inst.money(ticks)
            equity += inst.money(ticks + self._positions.get(inst_id, 0)
                                 * self._last_price.get(inst_id, 0))
        return AccountReport(currency=currency, cash=cash, equity=equity)

    # ---- runner hooks, forwarded to the matching engine (the runner may call `.matching`)

    def next_execution(self, batch: TickBatch, start: int, stop: int) -> int:
        """The matching engine's next execution, or earlier: the first tick at or after a
        delivery in flight is due, so the runner advances the clock there (firing it) and the
        orders sent in reaction can match the ticks that follow. Free with zero latency."""
        if self._pending:
            due = min(self._pending)
            idx = start + int(np.searchsorted(batch.ts_ns[start:stop], due, side="left"))
            if idx < stop:
                k = self.matching.next_execution(batch, start, idx)
                return k if k < idx else idx
        return self.matching.next_execution(batch, start, stop)

    def execute_at(self, batch: TickBatch, k: int) -> None:
        self.matching.execute_at(batch, k)

    def end_of_data(self, batch: TickBatch, max_passes: int = 16) -> None:
        delayed = self.clock is not None and (self._in_ns or self._out_ns)
        self.matching.end_of_data(batch, max_passes, self.flush if delayed else None)

    def warmup(self) -> None:
        matching.warmup()

    def working_orders(self) -> int:
        return self.matching.working_orders()

    def adopt_positions(self, positions: dict[str, int]) -> None:
        """An in-process exchange dies with the daemon: on a restart it is given back the
        positions the journal proves (its only memory) before reconciliation. Before any order."""
        if self._status:
            raise RuntimeError("adopt_positions must run before any order reaches the venue")
        self._positions = {i: q for i, q in positions.items() if q}

    def position(self, instrument_id: str) -> int:
        return self._positions.get(instrument_id, 0)

    # ---- ExecutionSink (called by the matching engine)

    def fillable(self, work: Working, quantity: int) -> int:
        req = work.request
        if not req.reduce_only:
            return quantity
        pos = self._positions.get(req.instrument_id, 0)
        return min(quantity, abs(pos)) if pos * req.side < 0 else 0

    def executed(self, work: Working, quantity: int, price: int, liquidity: str,
                 ts_ns: int) -> None:
        req = work.request
        self._execs += 1
        self.fills += 1
        exec_id = f"{self._tag}E-{self._execs}"
        fee = self._fee(req.instrument_id, price, quantity, liquidity)
        inst_id = req.instrument_id
        self._positions[inst_id] = self._positions.get(inst_id, 0) + req.side * quantity
        self._cash_ticks[inst_id] = self._cash_ticks.get(inst_id, 0) - req.side * quantity * price
        self._fees += fee
        self._last_price[inst_id] = price
        st = self._status[req.client_order_id]
        st.filled += quantity
        st.status = "filled" if st.filled >= req.quantity else "partially_filled"
        st.ts_ns = ts_ns
        self._fills.append(FillReport(exec_id=exec_id, client_order_id=req.client_order_id,
                                      instrument_id=inst_id, side=req.side, quantity=quantity,
                                      price=price, fee=fee, liquidity=liquidity, ts_ns=ts_ns))
        listener = self._require_listener()
        if self._out_ns:
            self._later(max(ts_ns + self._out_ns, st.ack_due), lambda due: listener.on_fill(
                req.client_order_id, exec_id, quantity, price, fee, liquidity, due,
                instrument_id=inst_id, side=req.side))
        else:
            listener.on_fill(req.client_order_id, exec_id, quantity, price, fee, liquidity, ts_ns,
                             instrument_id=inst_id, side=req.side)

    def clipped(self, work: Working, reason: str, ts_ns: int) -> None:
        st = self._status[work.request.client_order_id]
        st.status, st.ts_ns = "cancelled", ts_ns
        self._deliver(ts_ns, self._delay_after_ack(st, ts_ns),
                      self._require_listener().on_cancelled, work.request.client_order_id, reason)

    # ---- internals

    def _cancel_now(self, client_order_id: str, ts_ns: int) -> None:
        work = self.matching.get(client_order_id)
        if work is None:
            return  # already done: the order's outcome (fill / cancel) is on its way
        self.matching.remove(work)
        st = self._status[client_order_id]
        st.status, st.ts_ns = "cancelled", ts_ns
        self._deliver(ts_ns, self._delay_after_ack(st, ts_ns),
                      self._require_listener().on_cancelled, client_order_id, "cancel requested")

    def _delay_after_ack(self, st: _Status, ts_ns: int) -> int:
        """The out latency, stretched so the order's ack is delivered first (as venues do)."""
        return max(self._out_ns, st.ack_due - ts_ns) if self._out_ns else 0

    def _deliver(self, ts_ns: int, delay: int, fn: Callable[..., None], *args: Any) -> None:
        """Call `fn(*args, ts)` at `ts_ns + delay` through the clock, or now when synchronous."""
        if delay and self.clock is not None:
            self._later(ts_ns + delay, lambda due: fn(*args, due))
        else:
            fn(*args, ts_ns)

    def _later(self, due: int, callback: Callable[[int], None]) -> None:
        assert self.clock is not None
        self._pending.append(due)

        def fire(at: int) -> None:
            self._pending.remove(due)
            callback(at)

        self.clock.set_timer(due, fire)

    def flush(self) -> None:
        """End of a replay: deliver what is still in flight (acks, fills, cancels), advancing a
        replay clock to each due time. The runner calls it after its final `cancel_all`. Does
        nothing on a clock that cannot be advanced (live: the wall clock delivers)."""
        advance = getattr(self.clock, "advance_to", None)
        while self._pending and advance is not None:
            advance(min(self._pending))

    def _fee(self, instrument_id: str, price: int, qty: int, liquidity: str) -> Decimal:
        inst = self.instruments[instrument_id]
        rate = self.cfg.taker_fee_bps if liquidity == "taker" else self.cfg.maker_fee_bps
        notional = inst.tick_value * price * qty
        return (notional * rate / _BPS).quantize(self.cfg.fee_quantum, rounding=ROUND_HALF_EVEN)

    def _check(self, req: OrderRequest) -> str:
        if req.instrument_id not in self.instruments:
            return f"unknown instrument {req.instrument_id!r}"
        if req.client_order_id in self._status:
            return f"duplicate client_order_id {req.client_order_id!r}"
        if req.quantity <= 0:
            return f"quantity {req.quantity} must be > 0"
        if req.side not in (1, -1):
            return f"side {req.side} must be +1 or -1"
        if req.order_type not in matching.ORDER_TYPES:
            return f"order_type {req.order_type!r} is not supported"
        if req.order_type != "market" and (req.price is None or req.price <= 0):
            return f"{req.order_type} order needs a positive price, got {req.price}"
        if req.time_in_force != "gtc" and not (req.order_type == "market" and req.time_in_force == "ioc"):
            return f"time_in_force {req.time_in_force!r} is not supported for {req.order_type} orders"
        if req.reduce_only and self._positions.get(req.instrument_id, 0) * req.side >= 0:
            return (f"reduce_only {'buy' if req.side > 0 else 'sell'} with position "
                    f"{self._positions.get(req.instrument_id, 0)} would open or increase it")
        if not self.matching.has_room(req.instrument_id):
            return f"too many working orders (max {self.cfg.max_working_orders})"
        return ""

    def _require_listener(self) -> ExecutionListener:
        if self._listener is None:
            raise RuntimeError("SimExecutionClient has no listener: the order manager must call "
                               "set_listener")
        return self._listener
