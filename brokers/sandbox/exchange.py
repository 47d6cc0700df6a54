"""The sandbox's venue: a paced market (`market.py`), the simulated matching engine, and the
account it books into (orders, fills, positions, cash, persisted by `state.py`).

Time: one sandbox clock, `speed` market seconds per wall second, started at the wall time (or
the saved clock, whichever is later, so a restart never goes back). The market starts at that
time, so market time and order times agree. `step()` publishes and matches every tick that is
due; the server calls it in a loop.

Everything a client is told (trade updates) is queued while a change is made and delivered only
after the state that change produced is saved: the file is never behind what was announced.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from himari.brokers.sandbox import wire
from himari.brokers.sandbox.config import SandboxConfig
from himari.brokers.sandbox.faults import Faults
from himari.brokers.sandbox.state import (AccountState, FillRec, OrderRec, PositionRec, StateStore,
                                          book_fill)
from himari.brokers.sim.config import SimVenueConfig
from himari.brokers.sim.engine import MatchingEngine, Working
from himari.brokers.sandbox.market import Ticks, open_market
from himari.daemon.configbase import ConfigError
from himari.daemon.venue import OrderRequest

DAY_NS = 86_400_000_000_000
_BPS = Decimal(10_000)


class ApiError(Exception):
    """An HTTP error in Alpaca's shape: status, code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class SandboxClock:
    def __init__(self, speed: float, not_before_ns: int = 0) -> None:
        self.speed = speed
        self.base_ns = max(time.time_ns(), not_before_ns)
        self._mono0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self.base_ns + int((time.monotonic_ns() - self._mono0) * self.speed)

    def resume_from_base(self) -> None:
        """Market time starts now from the base: none passes while the server starts up."""
        self._mono0 = time.monotonic_ns()


class Exchange:
    def __init__(self, cfg: SandboxConfig, faults: Faults | None = None) -> None:
        self.cfg = cfg
        self.faults = faults or Faults()  # never_confirm and partial_fills act here
        self.store = StateStore(cfg.state_path)
        loaded = self.store.load()
        self.clock = SandboxClock(cfg.speed, loaded.clock_ns if loaded else 0)
        now = self.clock.now_ns()
        self.state = loaded or AccountState(account_id=str(uuid.uuid4()), created_ns=now,
                                            cash=Decimal(cfg.starting_cash))
        self.market = open_market(cfg, self.clock.base_ns)
        self.instruments = self.market.instruments
        self._check_saved_grid(loaded)
        self.venue_cfg = SimVenueConfig(taker_fee_bps=cfg.taker_fee_bps,
                                        maker_fee_bps=cfg.maker_fee_bps,
                                        slippage_ticks=cfg.slippage_ticks, limit_fill=cfg.limit_fill,
                                        max_working_orders=cfg.max_working_orders)
        self.engine = MatchingEngine(self.venue_cfg, self)
        self.quotes: dict[str, tuple[int, int]] = {}  # symbol -> (bid, ask) ticks, last seen
        self.on_trade_update: Callable[[dict[str, Any]], None] = lambda msg: None
        self.on_ticks: Callable[[Ticks], None] = lambda ticks: None
        self._outbox: list[dict[str, Any]] = []
        self._dirty = False
        self._by_coid = {o.client_order_id: o.id for o in self.state.orders.values()}
        for o in sorted(self.state.orders.values(), key=lambda o: o.created_ns):
            if o.is_open:  # a restart: working orders go back on the book
                self.engine.add(self._request(o, o.qty - o.filled), now)

    # ---- orders (REST)

    def submit(self, body: dict[str, Any]) -> OrderRec:
        now = self.clock.now_ns()
        now -= now % 1000  # whole microseconds, as the API shows it: `after=<created_at>` is exact
        o = self._parse_order(body, now)
        inst = self.instruments[o.symbol]
        if o.side > 0:
            price = o.limit_ticks if o.limit_ticks is not None else self._ask(o.symbol)
            need = inst.tick_value * price * o.qty
            bp = Decimal(wire.account(self.state, self.instruments, now)["buying_power"])
            if need > bp:
                raise ApiError(403, 40310000, "insufficient buying power")
        if not self.engine.has_room(o.symbol):
            raise ApiError(403, 40310000, f"too many open orders for {o.symbol} "
                                          f"(max {self.cfg.max_working_orders})")
        self.state.orders[o.id] = o
        self._by_coid[o.client_order_id] = o.id
        self.engine.add(self._request(o, o.qty), now + int(self.cfg.latency_ms * 1_000_000))
        o.status = "new"
        if not self.faults.never_confirm:
            self._emit("new", o, now)
        self._dirty = True
        return o

    def cancel(self, order_id: str) -> OrderRec:
        o = self.state.orders.get(order_id)
        if o is None:
            raise ApiError(404, 40410000, "order not found")
        if not o.is_open:
            raise ApiError(422, 42210000, f"order is not cancelable (status {o.status})")
        work = self.engine.get(o.client_order_id)
        if work is not None:
            self.engine.remove(work)
        now = self.clock.now_ns()
        o.status, o.canceled_ns, o.updated_ns = "canceled", now, now
        self._emit("canceled", o, now)
        self._dirty = True
        return o

    def by_client_id(self, client_order_id: str) -> OrderRec | None:
        order_id = self._by_coid.get(client_order_id)
        return self.state.orders[order_id] if order_id is not None else None

    # ---- market

    def step(self) -> int:
        """Publish and match every tick that is due; returns the next tick's time (ns)."""
        now = self.clock.now_ns()
        for ticks in self.market.take(now):
            self.quotes[ticks.symbol] = (int(ticks.bid[-1]), int(ticks.ask[-1]))
            self.state.last_ticks[ticks.symbol] = int(ticks.price[-1])
            self.on_ticks(ticks)
            self._match(ticks)
        self.expire(now)
        self.state.clock_ns = now
        self.commit()
        return self.market.next_ts()

    def commit(self) -> None:
        """Save what changed, then tell the clients (never the other way round)."""
        if self._dirty:
            self.store.save(self.state)
            self._dirty = False
        out, self._outbox = self._outbox, []
        for msg in out:
            self.on_trade_update(msg)

    def save(self) -> None:
        self.state.clock_ns = self.clock.now_ns()
        self.store.save(self.state)

    def _match(self, ticks: Ticks) -> None:
        if not self.engine.working_orders():
            return
        symbol = ticks.symbol
        batch = ticks.batch()
        start, stop = 0, len(batch)
        while start < stop:
            k = self.engine.next_execution(batch, start, stop)
            if k >= stop:
                break
            self.engine.execute_at(batch, k)
            start = k + 1
        last = int(ticks.ts_ns[-1])
        for work in self.engine.working():  # an IOC limit that saw a tick and rests: canceled
            o = self._order_of(work)
            if o.time_in_force == "ioc" and work.eligible_ns <= last and o.symbol == symbol:
                self.engine.remove(work)
                o.status, o.canceled_ns, o.updated_ns = "canceled", last, last
                self._emit("canceled", o, last)
                self._dirty = True

    def expire(self, now: int) -> None:
        """Day orders whose trading day ended by `now` expire."""
        for o in self.state.orders.values():
            if o.is_open and o.expires_ns is not None and o.expires_ns <= now:
                work = self.engine.get(o.client_order_id)
                if work is not None:
                    self.engine.remove(work)
                o.status, o.expired_ns, o.updated_ns = "expired", o.expires_ns, now
                self._emit("expired", o, now)
                self._dirty = True

    # ---- ExecutionSink (called by the matching engine)

    def fillable(self, work: Working, quantity: int) -> int:
        return quantity

    def executed(self, work: Working, quantity: int, price: int, liquidity: str,
                 ts_ns: int) -> None:
        o = self._order_of(work)
        parts = max(1, min(self.faults.partial_fills, quantity))
        sizes = [quantity // parts + (1 if i < quantity % parts else 0) for i in range(parts)]
        for q in sizes:
            self._book(o, q, price, liquidity, ts_ns)

    def clipped(self, work: Working, reason: str, ts_ns: int) -> None:
        o = self._order_of(work)
        o.status, o.canceled_ns, o.updated_ns = "canceled", ts_ns, ts_ns
        self._emit("canceled", o, ts_ns)
        self._dirty = True

    # ---- internals

    def _check_saved_grid(self, loaded: AccountState | None) -> None:
        """Saved prices are ticks and quantities lots: they mean the same only on the same grid."""
        grid = {s: [str(i.tick_size), str(i.lot_size)] for s, i in self.instruments.items()}
        if loaded is not None:
            used = set(loaded.positions) | {o.symbol for o in loaded.orders.values()}
            for symbol in sorted(used):
                if symbol not in grid:
                    raise ConfigError("sandbox.symbols", sorted(grid),
                                      f"the symbols of the saved account {self.cfg.state_path} "
                                      f"too (it has {symbol}); or start a new state_path")
                if loaded.grid.get(symbol, grid[symbol]) != grid[symbol]:
                    raise ConfigError("sandbox.tick_size / lot_size", grid[symbol],
                                      f"{loaded.grid[symbol]} for {symbol}, as in the saved "
                                      f"account {self.cfg.state_path}")
        self.state.grid.update(grid)

    def _book(self, o: OrderRec, qty: int, price: int, liquidity: str, ts_ns: int) -> None:
        inst = self.instruments[o.symbol]
        rate = self.cfg.taker_fee_bps if liquidity == "taker" else self.cfg.maker_fee_bps
        fee = (inst.tick_value * price * qty * rate / _BPS).quantize(self.venue_cfg.fee_quantum,
                                                                     rounding=ROUND_HALF_EVEN)
        fill = FillRec(execution_id=str(uuid.uuid4()), order_id=o.id, symbol=o.symbol,
                       side=o.side, qty=qty, price_ticks=price, fee=fee, liquidity=liquidity,
                       ts_ns=ts_ns)
        self.state.fills.append(fill)
        pos = self.state.positions.setdefault(o.symbol, PositionRec())
        book_fill(pos, o.side, qty, price)
        lots = pos.qty
        if pos.qty == 0:
            del self.state.positions[o.symbol]
        self.state.cash -= inst.tick_value * o.side * qty * price + fee
        self.state.fees += fee
        o.filled += qty
        o.filled_value += qty * price
        o.updated_ns = ts_ns
        if o.filled >= o.qty:
            o.status, o.filled_ns = "filled", ts_ns
        else:
            o.status = "partially_filled"
        self._emit("fill" if o.status == "filled" else "partial_fill", o, ts_ns, fill, lots)
        self._dirty = True

    def _emit(self, event: str, o: OrderRec, ts_ns: int, fill: FillRec | None = None,
              position_lots: int | None = None) -> None:
        self._outbox.append(wire.trade_update(event, o, self.instruments[o.symbol], ts_ns, fill,
                                              position_lots))

    def _ask(self, symbol: str) -> int:
        """The ask a market buy is checked against: the last one, or before any the next one."""
        if symbol in self.quotes:
            return self.quotes[symbol][1]
        return self.market.peek_ask(symbol)

    def _order_of(self, work: Working) -> OrderRec:
        o = self.by_client_id(work.request.client_order_id)
        assert o is not None, work.request.client_order_id
        return o

    def _request(self, o: OrderRec, qty: int) -> OrderRequest:
        return OrderRequest(client_order_id=o.client_order_id, instrument_id=o.symbol, side=o.side,
                            quantity=qty, order_type=o.type, price=o.limit_ticks,
                            time_in_force="ioc" if o.type == "market" and o.time_in_force == "ioc"
                            else "gtc", ts_ns=o.created_ns)

    def _parse_order(self, body: dict[str, Any], now: int) -> OrderRec:
        def bad(message: str) -> ApiError:
            return ApiError(422, 40010001, message)

        symbol = body.get("symbol")
        if not isinstance(symbol, str) or symbol not in self.instruments:
            raise bad(f"asset {symbol!r} not found (sandbox symbols: "
                      f"{', '.join(self.cfg.symbols)})")
        inst = self.instruments[symbol]
        side = {"buy": 1, "sell": -1}.get(body.get("side"))  # type: ignore[arg-type]
        if side is None:
            raise bad(f"side {body.get('side')!r} is not one of buy, sell")
        otype = body.get("type") or body.get("order_type")
        if otype not in ("market", "limit"):
            raise bad(f"type {otype!r} is not supported by the sandbox (market, limit)")
        tif = body.get("time_in_force")
        if tif not in ("day", "gtc", "ioc"):
            raise bad(f"time_in_force {tif!r} is not supported by the sandbox (day, gtc, ioc)")
        if body.get("notional") is not None:
            raise bad("notional orders are not supported by the sandbox: give qty")
        if body.get("order_class") not in (None, "", "simple"):
            raise bad(f"order_class {body.get('order_class')!r} is not supported (simple)")
        qty = self._number("qty", body.get("qty"))
        lots = qty / inst.lot_size
        if qty <= 0 or lots != lots.to_integral_value():
            raise bad(f"qty {body.get('qty')} must be a positive multiple of {inst.lot_size}")
        limit_ticks = None
        if otype == "limit":
            price = self._number("limit_price", body.get("limit_price"))
            ticks = price / inst.tick_size
            if price <= 0 or ticks != ticks.to_integral_value():
                raise bad(f"limit_price {body.get('limit_price')} must be a positive multiple of "
                          f"{inst.tick_size}")
            limit_ticks = int(ticks)
        elif body.get("limit_price") is not None:
            raise bad("limit_price is only for limit orders")
        coid = body.get("client_order_id") or str(uuid.uuid4())
        if not isinstance(coid, str) or len(coid) > 128:
            raise bad("client_order_id must be a string of at most 128 characters")
        if self.by_client_id(coid) is not None:
            raise bad("client_order_id must be unique")
        expires = (now - now % DAY_NS + DAY_NS) if tif == "day" else None
        return OrderRec(id=str(uuid.uuid4()), client_order_id=coid, symbol=symbol, side=side,
                        qty=int(lots), type=otype, time_in_force=tif, limit_ticks=limit_ticks,
                        status="accepted", created_ns=now, updated_ns=now, expires_ns=expires)

    @staticmethod
    def _number(key: str, value: Any) -> Decimal:
        try:
            out = Decimal(str(value)) if isinstance(value, (str, int, float)) else None
        except ArithmeticError:
            out = None
        if out is None or not out.is_finite():
            raise ApiError(422, 40010001, f"{key} {value!r} is not a number")
        return out
