"""`AlpacaExecutionClient`: the daemon's ExecutionClient (daemon/venue.py) for Alpaca.

Orders and cancels go onto one owned queue, sent in order by one owned task: an order is never
dropped (a 429 waits for `Retry-After`), never sent twice (an unknown POST outcome is resolved by
GET /v2/orders:by_client_order_id; a 5xx is looked up before it is retried), and a cancel follows
its order. Outcomes come from the `trade_updates` stream (stream.py), in the stream's order; an
immediate reject comes from the POST's answer. Status queries: queries.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import structlog

from himari.brokers.alpaca import convert
from himari.brokers.alpaca.backoff import Backoff, Sleep
from himari.brokers.alpaca.config import AlpacaConfig
from himari.brokers.alpaca.queries import QueriesMixin
from himari.brokers.alpaca.rest import AlpacaError, AlpacaRest, OutcomeUnknown
from himari.brokers.alpaca.stream import TradeUpdatesStream
from himari.daemon.clock import Clock
from himari.daemon.instruments import Instrument
from himari.daemon.venue import ExecutionListener, OrderRequest

log = structlog.get_logger("himari.alpaca")


def read_keys(cfg: AlpacaConfig, env: Mapping[str, str]) -> tuple[str, str]:
    """The API keys from the environment variables the config names (values never shown)."""
    missing = [n for n in (cfg.key_env, cfg.secret_env) if not env.get(n)]
    if missing:
        raise RuntimeError(f"Alpaca keys: environment variable(s) {', '.join(missing)} not set "
                           "(venue.params.key_env / secret_env name them)")
    return env[cfg.key_env], env[cfg.secret_env]


def _report_death(task: asyncio.Task[None]) -> None:
    """The owned tasks run until `close`; one that ends on its own has failed: say so."""
    if not task.cancelled() and task.exception() is not None:
        log.error("alpaca_task_died", task=task.get_name(), error=repr(task.exception()))


class AlpacaExecutionClient(QueriesMixin):
    def __init__(self, cfg: AlpacaConfig, instruments: dict[str, Instrument],
                 clock: Clock | None = None, session: str = "", *,
                 sleep: Sleep = asyncio.sleep, jitter: Callable[[], float] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.cfg, self.instruments, self.session_id = cfg, instruments, session
        self._clock = clock
        self.market_open: bool | None = None  # from the broker's clock, once connected
        self._sleep, self._jitter = sleep, jitter
        self._env = os.environ if env is None else env
        self._symbol = {iid: cfg.symbol(iid) for iid in instruments}
        self._instrument_of = {sym: iid for iid, sym in self._symbol.items()}
        self._listener: ExecutionListener | None = None
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._venue_ids: dict[str, str] = {}  # client order id -> Alpaca order id
        self._client_ids: dict[str, str] = {}  # Alpaca order id -> client order id
        self._exec_by_cum: dict[tuple[str, Decimal], str] = {}  # (order id, cum qty) -> exec id
        self._unsent: dict[str, asyncio.Event] = {}  # client order id -> set once its POST ended
        self._tasks: list[asyncio.Task[None]] = []
        self.rest: AlpacaRest | None = None
        self.stream: TradeUpdatesStream | None = None
        self.counters: dict[str, int] = {"posts": 0, "updates_unbookable": 0}

    def __repr__(self) -> str:
        return f"AlpacaExecutionClient({self.cfg.rest_url}, connected={self.connected})"

    # ------------------------------------------------------------------ lifecycle

    def _backoff(self) -> Backoff:
        kw: dict[str, Any] = {"sleep": self._sleep}
        if self._jitter is not None:
            kw["jitter"] = self._jitter
        return Backoff(self.cfg.backoff_initial_s, self.cfg.backoff_max_s, **kw)

    def set_listener(self, listener: ExecutionListener) -> None:
        self._listener = listener

    @property
    def connected(self) -> bool:
        return self.stream is not None and self.stream.connected

    async def connect(self) -> None:
        """Open the HTTP session; start the order sender and the trade_updates stream (owned
        tasks, cancelled by `close`). The stream reports `connected` through the listener."""
        if self._tasks:
            return
        key, secret = read_keys(self.cfg, self._env)
        self.rest = AlpacaRest(self.cfg, key, secret, self._backoff())
        session = await self.rest.open()
        self.stream = TradeUpdatesStream(self.cfg.trade_stream_url, key, secret, self._backoff(),
                                         self._on_update, self._on_state)
        self._tasks = [asyncio.create_task(self._send_loop(), name="alpaca-orders"),
                       asyncio.create_task(self.stream.run(session), name="alpaca-stream"),
                       asyncio.create_task(self._watch_clock(), name="alpaca-clock")]
        for task in self._tasks:
            task.add_done_callback(_report_death)

    async def _watch_clock(self, every_s: float = 30.0) -> None:
        """Market hours from the broker's clock (GET /v2/clock): `market_open` is what the risk
        gate reads before an entry (None until the first answer; a failed read keeps the last)."""
        assert self.rest is not None
        while True:
            try:
                body = await self.rest.query("GET", "/v2/clock")
                self.market_open = bool(body["is_open"])
            except Exception as exc:  # noqa: BLE001 - the clock must not take the client down
                log.warning("alpaca_clock_failed", error=str(exc))
            await asyncio.sleep(every_s)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        for coid in list(self._unsent):  # never sent: a query waiting on them must not hang
            self._posted(coid)
        if self.stream is not None:
            self.stream.connected = False
        if self.rest is not None:
            await self.rest.close()
        self.rest = None  # queries after close fail instead of reopening a session

    async def drain(self) -> None:
        """Wait until every queued order and cancel has been handled."""
        await self._queue.join()

    def _now(self) -> int:
        return self._clock.now_ns() if self._clock is not None else time.time_ns()

    # ------------------------------------------------------------------ commands

    def submit(self, request: OrderRequest) -> None:
        """Queue the order (never blocks). A request Alpaca could not take is rejected here."""
        inst = self.instruments.get(request.instrument_id)
        try:
            if inst is None:
                raise ValueError(f"instrument {request.instrument_id!r} is not configured "
                                 "for the Alpaca venue")
            body = convert.order_body(request, inst, self._symbol[request.instrument_id],
                                      self.cfg.extended_hours)
        except ValueError as exc:
            self._listen().on_rejected(request.client_order_id, str(exc), self._now())
            return
        self._unsent[request.client_order_id] = asyncio.Event()
        self._queue.put_nowait(("submit", (request.client_order_id, body)))

    def cancel(self, client_order_id: str, ts_ns: int) -> None:
        self._queue.put_nowait(("cancel", client_order_id))

    def _listen(self) -> ExecutionListener:
        if self._listener is None:
            raise RuntimeError("AlpacaExecutionClient has no listener: call set_listener first")
        return self._listener

    async def _send_loop(self) -> None:
        while True:
            kind, arg = await self._queue.get()
            try:
                if kind == "submit":
                    await self._post(*arg)
                else:
                    await self._delete(arg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("alpaca_order_op_failed", op=kind, error=str(exc))
            finally:
                if kind == "submit":
                    self._posted(arg[0])
                self._queue.task_done()

    def _posted(self, coid: str) -> None:
        done = self._unsent.pop(coid, None)
        if done is not None:
            done.set()

    async def _post(self, coid: str, body: dict[str, Any]) -> None:
        assert self.rest is not None
        backoff = self._backoff()
        tries = 0
        while True:
            self.counters["posts"] += 1
            try:
                status, data = await self.rest.request("POST", "/v2/orders", body=body)
            except OutcomeUnknown as exc:
                await self._resolve_unknown(coid, str(exc))
                return
            if 200 <= status < 300:
                self._remember(coid, data)
                return
            message = data.get("message", "") if isinstance(data, dict) else str(data)
            # a 5xx may still have placed the order, and a 422 "client_order_id must be unique"
            # says an earlier try did: look before rejecting or sending it again
            if status >= 500 or (status == 422 and "client_order_id" in message):
                try:
                    found = await self._lookup(coid)
                except (AlpacaError, OutcomeUnknown) as exc:
                    log.error("alpaca_order_unresolved", client_order_id=coid, error=str(exc))
                    return  # the order manager's ack timeout and reconciliation settle it
                if found is not None:
                    self._remember(coid, found)
                    return
            if status < 500:
                self._listen().on_rejected(coid, f"alpaca refused the order: HTTP {status}: "
                                           f"{message}", self._now())
                return
            if tries >= self.cfg.max_retries:
                self._listen().on_rejected(coid, f"alpaca HTTP {status} after {tries + 1} "
                                           f"attempts: {message}", self._now())
                return
            tries += 1
            log.warning("alpaca_order_retry", client_order_id=coid, status=status, attempt=tries)
            await backoff.wait()

    async def _resolve_unknown(self, coid: str, error: str) -> None:
        """The POST may or may not have placed the order: ask Alpaca, never resend."""
        log.warning("alpaca_order_outcome_unknown", client_order_id=coid, error=error)
        try:
            found = await self._lookup(coid)
        except (AlpacaError, OutcomeUnknown) as exc:
            # still unknown: the order manager's ack timeout and reconciliation settle it
            log.error("alpaca_order_unresolved", client_order_id=coid, error=str(exc))
            return
        if found is not None:
            self._remember(coid, found)
            return
        self._listen().on_rejected(coid, f"not placed: the POST failed ({error}) and Alpaca "
                                   "does not know the client order id", self._now())

    async def _delete(self, coid: str) -> None:
        assert self.rest is not None
        vid = self._venue_ids.get(coid)
        if vid is None:
            found = await self._lookup(coid)
            if found is None:
                log.warning("alpaca_cancel_unknown_order", client_order_id=coid)
                return
            self._remember(coid, found)
            vid = str(found["id"])
        try:
            await self.rest.query("DELETE", f"/v2/orders/{vid}", ok_404=True)
        except AlpacaError as exc:
            if exc.status != 422:  # 422: no longer cancelable (filled or done): the stream says
                raise
            log.info("alpaca_cancel_too_late", client_order_id=coid, error=exc.api_message)

    # ------------------------------------------------------------------ stream

    def _on_state(self, state: str) -> None:
        self._listen().on_connection(state, self._now())

    def _on_update(self, data: dict[str, Any]) -> None:
        event = str(data.get("event", ""))
        order = data.get("order") if isinstance(data.get("order"), dict) else {}
        coid, vid = str(order.get("client_order_id", "")), str(order.get("id", ""))
        if coid and vid:
            self._remember(coid, order)
        ts = convert.parse_ts(data["timestamp"]) if data.get("timestamp") else self._now()
        listener = self._listen()
        if event == "new":
            listener.on_accepted(coid, vid, ts)
        elif event in ("fill", "partial_fill"):
            self._fill(data, order, coid, vid, ts)
        elif event == "canceled":
            listener.on_cancelled(coid, "canceled at alpaca", ts)
        elif event == "expired":
            listener.on_expired(coid, "expired at alpaca", ts)
        elif event == "rejected":
            listener.on_rejected(coid, f"rejected by alpaca: {data.get('reason') or 'no reason'}",
                                 ts)
        else:
            log.info("alpaca_trade_update", trade_event=event, client_order_id=coid)

    def _fill(self, data: dict[str, Any], order: dict[str, Any], coid: str, vid: str,
              ts: int) -> None:
        symbol = str(order.get("symbol", ""))
        iid = self._instrument_of.get(symbol)
        exec_id = str(data.get("execution_id") or "")
        try:
            if iid is None:
                raise ValueError(f"fill for symbol {symbol!r}, which names no configured instrument")
            inst = self.instruments[iid]
            qty = inst.qty_to_lots(convert.dec(data.get("qty"), "qty"))
            price = inst.price_to_ticks(convert.dec(data.get("price"), "price"))
            fee = convert.dec(data["fee"], "fee") if data.get("fee") is not None else Decimal(0)
        except ValueError as exc:  # InstrumentError too: off the tick or lot grid
            self.counters["updates_unbookable"] += 1
            log.error("alpaca_fill_unbookable", client_order_id=coid, exec_id=exec_id,
                      error=str(exc))
            return
        if order.get("filled_qty") is not None and vid:
            # so the FILL activity for the same execution gets the same id (fills_since)
            self._exec_by_cum[(vid, convert.dec(order["filled_qty"], "filled_qty"))] = exec_id
        self._listen().on_fill(coid, exec_id, qty, price, fee, "", ts, instrument_id=iid,
                               side=convert.SIDE_OF.get(str(order.get("side")), 0))
