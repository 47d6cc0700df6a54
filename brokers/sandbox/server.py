"""The broker sandbox's HTTP server: Alpaca's Trading API v2 (the subset a trading daemon uses),
its WebSocket streams (`streams.py`), faults on command (`faults.py`), over `Exchange`.

REST auth: headers `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` (401 `{"code", "message"}` when
wrong or missing). Routes: GET /v2/account, /v2/clock, /v2/assets, /v2/assets/{symbol};
POST /v2/orders; GET /v2/orders, /v2/orders/{id}, /v2/orders:by_client_order_id;
DELETE /v2/orders/{id}, /v2/orders; GET /v2/positions, /v2/positions/{symbol};
GET /v2/account/activities[/{type}] (FILL only); GET|POST|DELETE /admin/faults. The keys are
never logged.

`Sandbox` is the async context manager (tests, the CLI): it binds, starts the market loop and
exposes the bound `port`; `run_sandbox` serves until cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
import structlog
from aiohttp import web

from himari.brokers.sandbox import wire
from himari.brokers.sandbox.config import SandboxConfig
from himari.brokers.sandbox.exchange import ApiError, Exchange
from himari.brokers.sandbox.faults import FaultError, Faults
from himari.brokers.sandbox.state import OPEN_STATUSES
from himari.brokers.sandbox.streams import DataHub, Keys, TradeHub

log = structlog.get_logger("himari.sandbox")
DATA_FEEDS = ("iex", "sip", "test")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


class Sandbox:
    """`async with Sandbox(cfg, key_id, secret) as sb:` serves on `sb.port` (port 0: any free)."""

    def __init__(self, cfg: SandboxConfig, key_id: str, secret: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.cfg, self.host, self._port = cfg, host, port
        self.keys = Keys(key_id, secret)
        self.faults = Faults()
        self.exchange: Exchange | None = None
        self.trades: TradeHub | None = None
        self.data: DataHub | None = None
        self._runner: web.AppRunner | None = None
        self._market: asyncio.Task[None] | None = None
        self.port = 0

    # ---- lifecycle

    async def start(self) -> None:
        self.exchange = ex = Exchange(self.cfg, self.faults)
        self.trades = TradeHub(self.keys, self.faults)
        self.data = DataHub(self.keys, ex.instruments)
        ex.on_trade_update = self.trades.publish
        ex.on_ticks = self.data.on_ticks
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/v2/account", self._account)
        r.add_get("/v2/clock", self._clock)
        r.add_get("/v2/assets", self._assets)
        r.add_get("/v2/assets/{symbol}", self._asset)
        r.add_post("/v2/orders", self._submit)
        r.add_get("/v2/orders", self._orders)
        r.add_delete("/v2/orders", self._cancel_all)
        r.add_get("/v2/orders:by_client_order_id", self._by_client_id)
        r.add_get("/v2/orders/{id}", self._order)
        r.add_delete("/v2/orders/{id}", self._cancel)
        r.add_get("/v2/positions", self._positions)
        r.add_get("/v2/positions/{symbol}", self._position)
        r.add_get("/v2/account/activities", self._activities)
        r.add_get("/v2/account/activities/{type}", self._activities)
        r.add_get("/admin/faults", self._faults_get)
        r.add_post("/admin/faults", self._faults_post)
        r.add_delete("/admin/faults", self._faults_clear)
        r.add_get("/stream", self.trades.handle)
        for feed in DATA_FEEDS:
            r.add_get(f"/v2/{feed}", self.data.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ex.clock.resume_from_base()
        ex.step()  # the first ticks are out before anyone connects
        self._market = asyncio.create_task(self._market_loop(), name="sandbox-market")
        log.info("sandbox_started", host=self.host, port=self.port, symbols=sorted(ex.instruments),
                 speed=self.cfg.speed, state_path=self.cfg.state_path or None)

    async def stop(self) -> None:
        if self._market is not None:
            self._market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._market
            self._market = None
        await self.drop_websockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.exchange is not None:
            self.exchange.save()
        log.info("sandbox_stopped", port=self.port)

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait(self) -> None:
        """Until the market loop ends (only by an error or cancellation)."""
        assert self._market is not None
        await self._market

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://{self.host}:{self.port}/stream"

    def data_url(self, feed: str = "iex") -> str:
        return f"ws://{self.host}:{self.port}/v2/{feed}"

    async def drop_websockets(self) -> None:
        for hub in (self.trades, self.data):
            if hub is not None:
                for ws in list(hub.sockets):
                    await ws.close()

    async def _market_loop(self) -> None:
        ex = self.exchange
        assert ex is not None
        while True:
            next_ns = ex.step()
            wait_s = (next_ns - ex.clock.now_ns()) / ex.clock.speed / 1e9
            await asyncio.sleep(min(max(wait_s, 0.001), 0.05))

    # ---- middleware: auth, HTTP faults, Alpaca-shaped errors

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        path = request.path
        is_ws = path == "/stream" or path in {f"/v2/{f}" for f in DATA_FEEDS}
        if is_ws:
            return await handler(request)  # authenticated in-band
        h = request.headers
        if not self.keys.check(h.get("APCA-API-KEY-ID"), h.get("APCA-API-SECRET-KEY")):
            return _json(wire.error(40110000, "request is not authorized"), 401)
        if path.startswith("/v2/"):
            fault = self.faults.take_http()
            if fault is not None:
                status, headers = fault
                message = "rate limit exceeded" if status == 429 else "internal server error"
                return _json(wire.error(status * 100_000, message), status, headers)
        try:
            return await handler(request)
        except ApiError as exc:
            return _json(wire.error(exc.code, exc.message), exc.status)
        except web.HTTPNotFound:
            return _json(wire.error(40410000, f"endpoint not found: {request.method} {path}"), 404)
        except web.HTTPMethodNotAllowed:
            return _json(wire.error(40510000, f"method not allowed: {request.method} {path}"), 405)

    # ---- REST handlers

    @property
    def _ex(self) -> Exchange:
        assert self.exchange is not None
        return self.exchange

    async def _account(self, request: web.Request) -> web.Response:
        ex = self._ex
        return _json(wire.account(ex.state, ex.instruments, ex.clock.now_ns()))

    async def _clock(self, request: web.Request) -> web.Response:
        # The sandbox's market never closes: a session is a UTC day of the sandbox clock, the
        # next one opening as the last closes (day orders expire at its end).
        now = self._ex.clock.now_ns()
        close = now - now % 86_400_000_000_000 + 86_400_000_000_000
        return _json({"timestamp": wire.ts(now), "is_open": True, "next_open": wire.ts(close),
                      "next_close": wire.ts(close)})

    async def _assets(self, request: web.Request) -> web.Response:
        return _json([wire.asset(i) for i in self._ex.instruments.values()])

    async def _asset(self, request: web.Request) -> web.Response:
        inst = self._ex.instruments.get(request.match_info["symbol"].upper())
        if inst is None:
            raise ApiError(404, 40410000, f"asset not found: {request.match_info['symbol']}")
        return _json(wire.asset(inst))

    async def _submit(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise ApiError(400, 40010000, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(422, 40010001, "the order must be a JSON object")
        ex = self._ex
        o = ex.submit(body)
        reply = wire.order(o, ex.instruments[o.symbol])
        ex.commit()  # saved before the client hears of it
        return _json(reply)

    async def _orders(self, request: web.Request) -> web.Response:
        q = request.query
        status = q.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise ApiError(422, 40010001, f"status {status!r} is not one of open, closed, all")
        limit = _int_param(q, "limit", 50, 1, 500)
        direction = q.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise ApiError(422, 40010001, f"direction {direction!r} is not one of asc, desc")
        after, until = _time_param(q, "after"), _time_param(q, "until")
        symbols = set(filter(None, q.get("symbols", "").split(","))) or None
        side = q.get("side")
        out = []
        for o in self._ex.state.orders.values():
            if (status == "open") != o.is_open and status != "all":
                continue
            if after is not None and o.created_ns <= after or until is not None and o.created_ns > until:
                continue
            if symbols is not None and o.symbol not in symbols:
                continue
            if side is not None and side != ("buy" if o.side > 0 else "sell"):
                continue
            out.append(o)
        out.sort(key=lambda o: o.created_ns, reverse=direction == "desc")
        return _json([wire.order(o, self._ex.instruments[o.symbol]) for o in out[:limit]])

    async def _order(self, request: web.Request) -> web.Response:
        o = self._ex.state.orders.get(request.match_info["id"])
        if o is None:
            raise ApiError(404, 40410000, f"order not found for {request.match_info['id']}")
        return _json(wire.order(o, self._ex.instruments[o.symbol]))

    async def _by_client_id(self, request: web.Request) -> web.Response:
        coid = request.query.get("client_order_id", "")
        o = self._ex.by_client_id(coid)
        if o is None:
            raise ApiError(404, 40410000, f"order not found for client_order_id {coid!r}")
        return _json(wire.order(o, self._ex.instruments[o.symbol]))

    async def _cancel(self, request: web.Request) -> web.Response:
        self._ex.cancel(request.match_info["id"])
        self._ex.commit()
        return web.Response(status=204)

    async def _cancel_all(self, request: web.Request) -> web.Response:
        ex = self._ex
        out = []
        for o in [o for o in ex.state.orders.values() if o.status in OPEN_STATUSES]:
            ex.cancel(o.id)
            out.append({"id": o.id, "status": 200, "body": wire.order(o, ex.instruments[o.symbol])})
        ex.commit()
        return _json(out, 207)

    async def _positions(self, request: web.Request) -> web.Response:
        ex = self._ex
        return _json([wire.position(s, p, ex.state.last_ticks.get(s, 0), ex.instruments[s])
                      for s, p in sorted(ex.state.positions.items())])

    async def _position(self, request: web.Request) -> web.Response:
        ex = self._ex
        symbol = request.match_info["symbol"].upper()
        pos = ex.state.positions.get(symbol)
        if pos is None:
            raise ApiError(404, 40410000, "position does not exist")
        return _json(wire.position(symbol, pos, ex.state.last_ticks.get(symbol, 0),
                                   ex.instruments[symbol]))

    async def _activities(self, request: web.Request) -> web.Response:
        """FILL activities (the only kind the sandbox has): `after`, `until`, `direction`
        (default desc), `page_size` (<= 100), `page_token` (the last id of the previous page)."""
        q = request.query
        kinds = {k.strip().upper() for k in (request.match_info.get("type")
                                             or q.get("activity_types", "FILL")).split(",")}
        direction = q.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise ApiError(422, 40010001, f"direction {direction!r} is not one of asc, desc")
        if "FILL" not in kinds:
            return _json([])
        ex = self._ex
        after, until = _time_param(q, "after"), _time_param(q, "until")
        cum: dict[str, int] = {}
        rows = []
        for f in ex.state.fills:  # booked in time order; cum_qty is the order's filled so far
            cum[f.order_id] = cum.get(f.order_id, 0) + f.qty
            t = f.ts_ns // 1000 * 1000  # the time as the activity shows it (microseconds)
            if (after is None or t > after) and (until is None or t <= until):
                rows.append(wire.fill_activity(f, ex.state.orders[f.order_id], cum[f.order_id],
                                               ex.instruments[f.symbol]))
        if direction == "desc":
            rows.reverse()
        token = q.get("page_token")
        if token:
            ids = [r["id"] for r in rows]
            if token not in ids:
                raise ApiError(422, 40010001, f"page_token {token!r} names no activity")
            rows = rows[ids.index(token) + 1:]
        return _json(rows[:_int_param(q, "page_size", 100, 1, 100)])

    # ---- faults

    async def _faults_get(self, request: web.Request) -> web.Response:
        return _json(self.faults.view())

    async def _faults_post(self, request: web.Request) -> web.Response:
        try:
            drop = self.faults.apply(orjson.loads(await request.read()))
        except (FaultError, orjson.JSONDecodeError) as exc:
            raise ApiError(422, 40010001, f"faults: {exc}") from None
        log.warning("sandbox_faults", drop_ws=drop, **self.faults.view())
        if drop:
            await self.drop_websockets()
        return _json(self.faults.view())

    async def _faults_clear(self, request: web.Request) -> web.Response:
        fresh = Faults()
        for name in Faults.__struct_fields__:  # in place: the trade hub holds this object
            setattr(self.faults, name, getattr(fresh, name))
        return _json(self.faults.view())


def _int_param(q: Any, key: str, default: int, lo: int, hi: int) -> int:
    try:
        value = int(q.get(key, default))
    except ValueError:
        raise ApiError(422, 40010001, f"{key} {q.get(key)!r} is not an integer") from None
    return min(max(value, lo), hi)


def _time_param(q: Any, key: str) -> int | None:
    text = q.get(key)
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace(" ", "+"))
    except ValueError:
        raise ApiError(422, 40010001, f"{key} {text!r} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise ApiError(422, 40010001, f"{key} {text!r} needs a time zone")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


async def run_sandbox(cfg: SandboxConfig, host: str, port: int, key_id: str, secret: str) -> None:
    """Serve the sandbox on host:port until cancelled (the CLI's `himari sandbox`)."""
    async with Sandbox(cfg, key_id, secret, host, port) as sb:
        await sb.wait()
