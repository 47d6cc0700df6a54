"""The in-process simulated venue.

It implements `VenueClient` for the order manager and, for the replay loop, `next_execution` /
`execute_at` / `end_of_data`, so the loop can jump straight to the ticks where something executes.

Fills: market orders take the far side of the next eligible tick (the ask for a buy, the bid for a
sell; both equal the trade price on trade ticks) plus `slippage_ticks`; a triggered stop becomes a
market order on that tick; a limit fills at its limit price as maker, capped by the trade's size when
`limit_fill = "trade_size"` (so resting orders can fill in parts). Orders are eligible to match
`latency_ms` after they were sent. Fees are a basis-point rate on notional, exact in Decimal.
Supported: market (gtc/ioc), limit and stop (gtc). Anything else is rejected with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

from himari.brokers.sim import matching
from himari.brokers.sim.config import SimVenueConfig
from himari.daemon.events import TickBatch, TickKind
from himari.daemon.instruments import Instrument
from himari.daemon.venue import OrderRequest, VenueListener

_BPS = Decimal(10_000)


@dataclass
class _Working:
    request: OrderRequest
    slot: int
    seq: int
    leaves: int


class _Book:
    """Working orders of one instrument in kernel-friendly arrays."""

    def __init__(self, capacity: int) -> None:
        self.active = np.zeros(capacity, dtype=np.bool_)
        self.otype = np.zeros(capacity, dtype=np.int8)
        self.oside = np.zeros(capacity, dtype=np.int8)
        self.oprice = np.zeros(capacity, dtype=np.int64)
        self.oeligible = np.zeros(capacity, dtype=np.int64)
        self.by_slot: dict[int, _Working] = {}
        self.free = list(range(capacity - 1, -1, -1))
        self.scratch = np.zeros(capacity, dtype=np.int64)


class SimVenue:
    def __init__(self, cfg: SimVenueConfig, instruments: dict[str, Instrument]) -> None:
        self.cfg = cfg
        self.instruments = instruments
        self._latency_ns = int(cfg.latency_ms * 1_000_000)
        self._books: dict[str, _Book] = {}
        self._by_coid: dict[str, _Working] = {}
        self._listener: VenueListener | None = None
        self._seq = 0
        self.fills = 0
        self.rejects = 0

    # ---- VenueClient

    def set_listener(self, listener: VenueListener) -> None:
        self._listener = listener

    def submit(self, request: OrderRequest) -> None:
        listener = self._require_listener()
        reason = self._check(request)
        if reason:
            self.rejects += 1
            listener.on_rejected(request.client_order_id, reason, request.ts_ns)
            return
        book = self._books.get(request.instrument_id)
        if book is None:
            book = self._books[request.instrument_id] = _Book(self.cfg.max_working_orders)
        slot = book.free.pop()
        self._seq += 1
        work = _Working(request, slot, self._seq, request.quantity)
        book.by_slot[slot] = work
        self._by_coid[request.client_order_id] = work
        book.otype[slot] = matching.ORDER_TYPES[request.order_type]
        book.oside[slot] = request.side
        book.oprice[slot] = request.price if request.price is not None else 0
        book.oeligible[slot] = request.ts_ns + self._latency_ns
        book.active[slot] = True
        listener.on_accepted(request.client_order_id, f"SIM-{self._seq}", request.ts_ns)

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        work = self._by_coid.get(client_order_id)
        if work is None:
            return  # already done: the order manager's state machine knows it is not working
        self._remove(work)
        self._require_listener().on_cancelled(client_order_id, "cancel requested", ts_ns)

    # ---- replay loop hooks

    def next_execution(self, batch: TickBatch, start: int, stop: int) -> int:
        book = self._books.get(batch.instrument_id)
        if book is None or not book.by_slot:
            return stop
        return int(matching.next_execution(batch.ts_ns, batch.bid, batch.ask,
                                           batch.kind == TickKind.QUOTES, start, stop, book.active,
                                           book.otype, book.oside, book.oprice, book.oeligible))

    def execute_at(self, batch: TickBatch, k: int) -> None:
        """Execute every order that matches tick k, in submission order."""
        book = self._books.get(batch.instrument_id)
        if book is None:
            return
        t, b, a = int(batch.ts_ns[k]), int(batch.bid[k]), int(batch.ask[k])
        is_quotes = batch.kind == TickKind.QUOTES
        m = matching.executing_slots(t, b, a, is_quotes, book.active, book.otype, book.oside,
                                     book.oprice, book.oeligible, book.scratch)
        works = sorted((book.by_slot[int(s)] for s in book.scratch[:m]), key=lambda w: w.seq)
        for work in works:
            if not book.active[work.slot]:
                continue  # cancelled by an earlier fill on this tick (one-cancels-other)
            self._execute(work, t, b, a, int(batch.size[k]), is_quotes)

    def end_of_data(self, batch: TickBatch, max_passes: int = 16) -> None:
        """The data ended: market orders still waiting fill at the last tick seen. Orders sent
        in reaction to those fills (a close, then the opposite entry) fill in a further pass."""
        if len(batch) == 0:
            return
        book = self._books.get(batch.instrument_id)
        if book is None:
            return
        k = len(batch) - 1
        t, b, a = int(batch.ts_ns[k]), int(batch.bid[k]), int(batch.ask[k])
        for _ in range(max_passes):
            waiting = sorted((w for w in book.by_slot.values()
                              if w.request.order_type == "market"), key=lambda w: w.seq)
            if not waiting:
                return
            for work in waiting:
                if book.active[work.slot]:
                    self._execute(work, t, b, a, 0, batch.kind == TickKind.QUOTES)

    def working_orders(self) -> int:
        return len(self._by_coid)

    # ---- internals

    def _execute(self, work: _Working, t: int, b: int, a: int, trade_size: int,
                 is_quotes: bool) -> None:
        req = work.request
        slip = self.cfg.slippage_ticks
        if req.order_type == "limit":
            price, liquidity = int(req.price), "maker"  # type: ignore[arg-type]
            qty = work.leaves
            if self.cfg.limit_fill == "trade_size" and not is_quotes and trade_size > 0:
                qty = min(qty, trade_size)
        else:
            price = a + slip if req.side > 0 else max(1, b - slip)
            liquidity, qty = "taker", work.leaves
        work.leaves -= qty
        if work.leaves == 0:
            self._remove(work)
        self.fills += 1
        fee = self._fee(req.instrument_id, price, qty, liquidity)
        self._require_listener().on_fill(req.client_order_id, qty, price, fee, liquidity, t)

    def _fee(self, instrument_id: str, price: int, qty: int, liquidity: str) -> Decimal:
        inst = self.instruments[instrument_id]
        rate = self.cfg.taker_fee_bps if liquidity == "taker" else self.cfg.maker_fee_bps
        notional = inst.tick_value * price * qty
        return (notional * rate / _BPS).quantize(self.cfg.fee_quantum, rounding=ROUND_HALF_EVEN)

    def _remove(self, work: _Working) -> None:
        book = self._books[work.request.instrument_id]
        book.active[work.slot] = False
        del book.by_slot[work.slot]
        book.free.append(work.slot)
        del self._by_coid[work.request.client_order_id]

    def _check(self, req: OrderRequest) -> str:
        if req.instrument_id not in self.instruments:
            return f"unknown instrument {req.instrument_id!r}"
        if req.client_order_id in self._by_coid:
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
        book = self._books.get(req.instrument_id)
        if book is not None and not book.free:
            return f"too many working orders (max {self.cfg.max_working_orders})"
        return ""

    def _require_listener(self) -> VenueListener:
        if self._listener is None:
            raise RuntimeError("SimVenue has no listener: the order manager must call set_listener")
        return self._listener
