"""Matching engine of the simulated exchange: working orders per instrument, matched by the Numba
kernels of `matching.py` against tick batches.

The engine decides *when* and *at what price* an order executes; what an execution means for the
account (positions, fills with execution ids, order statuses, acknowledgements and their latency)
is the client's job (`client.py`), reached through an `ExecutionSink`. The same engine serves a
replay (the replay runner calls `next_execution` / `execute_at` / `end_of_data`) and a paper
session (the live runner feeds it the live ticks the same way).

Prices: market orders take the far side of the tick (the ask for a buy, the bid for a sell; both
equal the trade price on trade ticks) plus `slippage_ticks`; a triggered stop becomes a market order
on that tick. A limit order that is marketable on arrival (it executes on its first eligible tick)
takes liquidity: it fills at the market like a market order (never worse than its limit), as taker.
A limit that rested (saw an eligible tick without executing) and is crossed later fills at its limit
as maker, capped by the trade's size when `limit_fill = "trade_size"`. The sink may clip a fill (a
reduce-only order never opens or increases a position); the rest of a clipped order is cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from himari.brokers.sim import matching
from himari.brokers.sim.config import SimVenueConfig
from himari.daemon.events import TickBatch, TickKind
from himari.daemon.venue import OrderRequest


@dataclass(slots=True, eq=False)
class Working:
    request: OrderRequest
    slot: int
    seq: int
    leaves: int
    eligible_ns: int
    fresh: bool = True  # no eligible tick seen yet: a limit executing now was marketable on arrival


class ExecutionSink(Protocol):
    def fillable(self, work: Working, quantity: int) -> int:
        """How many of `quantity` lots may fill now (reduce-only clipping)."""
        ...

    def executed(self, work: Working, quantity: int, price: int, liquidity: str,
                 ts_ns: int) -> None: ...

    def clipped(self, work: Working, reason: str, ts_ns: int) -> None:
        """The order was removed unfilled (its rest could only open or increase a position)."""
        ...


class _Book:
    """Working orders of one instrument in kernel-friendly arrays."""

    def __init__(self, capacity: int) -> None:
        self.active = np.zeros(capacity, dtype=np.bool_)
        self.otype = np.zeros(capacity, dtype=np.int8)
        self.oside = np.zeros(capacity, dtype=np.int8)
        self.oprice = np.zeros(capacity, dtype=np.int64)
        self.oeligible = np.zeros(capacity, dtype=np.int64)
        self.by_slot: dict[int, Working] = {}
        self.free = list(range(capacity - 1, -1, -1))
        self.scratch = np.zeros(capacity, dtype=np.int64)
        self.fresh: list[Working] = []  # limit orders that have not yet seen an eligible tick


class MatchingEngine:
    def __init__(self, cfg: SimVenueConfig, sink: ExecutionSink) -> None:
        self.cfg = cfg
        self._sink = sink
        self._books: dict[str, _Book] = {}
        self._by_coid: dict[str, Working] = {}
        self._seq = 0

    def warmup(self) -> None:
        """Compile the matching kernels (Numba caches them on disk)."""
        matching.warmup()

    # ---- orders

    def has_room(self, instrument_id: str) -> bool:
        book = self._books.get(instrument_id)
        return book is None or bool(book.free)

    def get(self, client_order_id: str) -> Working | None:
        return self._by_coid.get(client_order_id)

    def add(self, request: OrderRequest, eligible_ns: int) -> Working:
        """Put a checked order on the book; it may match from `eligible_ns` on."""
        book = self._books.get(request.instrument_id)
        if book is None:
            book = self._books[request.instrument_id] = _Book(self.cfg.max_working_orders)
        slot = book.free.pop()
        self._seq += 1
        work = Working(request, slot, self._seq, request.quantity, eligible_ns)
        book.by_slot[slot] = work
        self._by_coid[request.client_order_id] = work
        book.otype[slot] = matching.ORDER_TYPES[request.order_type]
        book.oside[slot] = request.side
        book.oprice[slot] = request.price if request.price is not None else 0
        book.oeligible[slot] = eligible_ns
        book.active[slot] = True
        if request.order_type == "limit":
            book.fresh.append(work)
        return work

    def remove(self, work: Working) -> None:
        book = self._books[work.request.instrument_id]
        book.active[work.slot] = False
        del book.by_slot[work.slot]
        book.free.append(work.slot)
        del self._by_coid[work.request.client_order_id]
        work.fresh = False

    def working_orders(self) -> int:
        return len(self._by_coid)

    def working(self) -> list[Working]:
        return sorted(self._by_coid.values(), key=lambda w: w.seq)

    # ---- runner hooks

    def next_execution(self, batch: TickBatch, start: int, stop: int) -> int:
        book = self._books.get(batch.instrument_id)
        if book is None or not book.by_slot:
            return stop
        k = int(matching.next_execution(batch.ts_ns, batch.bid, batch.ask,
                                        batch.kind == TickKind.QUOTES, start, stop, book.active,
                                        book.otype, book.oside, book.oprice, book.oeligible))
        if book.fresh and k > start:  # ticks start..k-1 passed without executing: those rest
            self._rest_fresh(book, int(batch.ts_ns[k - 1]))
        return k

    def execute_at(self, batch: TickBatch, k: int) -> None:
        """Execute every order that matches tick k, in submission order. A fill handler may
        cancel and submit orders meanwhile (a freed slot can be reused at once), so each work is
        re-checked by identity, never by slot alone."""
        book = self._books.get(batch.instrument_id)
        if book is None:
            return
        t, b, a = int(batch.ts_ns[k]), int(batch.bid[k]), int(batch.ask[k])
        is_quotes = batch.kind == TickKind.QUOTES
        m = matching.executing_slots(t, b, a, is_quotes, book.active, book.otype, book.oside,
                                     book.oprice, book.oeligible, book.scratch)
        works = sorted((book.by_slot[int(s)] for s in book.scratch[:m]), key=lambda w: w.seq)
        seen = list(book.fresh) if book.fresh else None  # orders on the book before this tick
        for work in works:
            if book.by_slot.get(work.slot) is not work:
                continue  # cancelled (one-cancels-other) or replaced by an earlier fill's handler
            self._execute(work, t, b, a, int(batch.size[k]), is_quotes)
        if seen:  # whatever of them is still working saw this tick: it rests from now on
            for work in seen:
                if work.eligible_ns <= t:
                    work.fresh = False
            book.fresh = [w for w in book.fresh if w.fresh]

    def end_of_data(self, batch: TickBatch, max_passes: int = 16,
                    after_pass: Callable[[], None] | None = None) -> None:
        """The data ended: market orders still waiting fill at the last tick seen. Orders sent
        in reaction to those fills (a close, then the opposite entry) fill in a further pass;
        `after_pass` lets the client deliver delayed fills so those reactions happen."""
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
                if after_pass is None:
                    return
                after_pass()
                if not any(w.request.order_type == "market" for w in book.by_slot.values()):
                    return
                continue
            for work in waiting:
                if book.by_slot.get(work.slot) is work:
                    self._execute(work, t, b, a, 0, batch.kind == TickKind.QUOTES)
            if after_pass is not None:
                after_pass()

    # ---- internals

    def _rest_fresh(self, book: _Book, ts_seen: int) -> None:
        for work in book.fresh:
            if work.eligible_ns <= ts_seen:
                work.fresh = False
        book.fresh = [w for w in book.fresh if w.fresh]

    def _execute(self, work: Working, t: int, b: int, a: int, trade_size: int,
                 is_quotes: bool) -> None:
        req = work.request
        slip = self.cfg.slippage_ticks
        market = a + slip if req.side > 0 else max(1, b - slip)
        if req.order_type == "limit" and not work.fresh:
            price, liquidity = int(req.price), "maker"  # type: ignore[arg-type]
            qty = work.leaves
            if self.cfg.limit_fill == "trade_size" and not is_quotes and trade_size > 0:
                qty = min(qty, trade_size)
        elif req.order_type == "limit":  # marketable on arrival: takes, never worse than limit
            limit = int(req.price)  # type: ignore[arg-type]
            price = min(market, limit) if req.side > 0 else max(market, limit)
            liquidity, qty = "taker", work.leaves
        else:
            price, liquidity, qty = market, "taker", work.leaves
        work.fresh = False
        allowed = self._sink.fillable(work, qty)
        if allowed > 0:
            work.leaves -= allowed
            if work.leaves == 0:
                self.remove(work)
            self._sink.executed(work, allowed, price, liquidity, t)
        if allowed < qty and self._by_coid.get(req.client_order_id) is work:
            self.remove(work)
            self._sink.clipped(work, "reduce_only: the rest would open or increase the position",
                               t)
