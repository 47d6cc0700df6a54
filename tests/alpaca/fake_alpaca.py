"""A small fake Alpaca on 127.0.0.1 (an ephemeral port) speaking the real message formats:
Trading API v2 REST, the `trade_updates` stream and the market data stream. Tests script its
answers (`post_script`) and push stream messages; it records every request."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

KEY, SECRET = "PKTESTKEY1234567890", "sEcReT-value-0987654321-abcdef"


class FakeAlpaca:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []  # method, path, query, body
        self.orders: dict[str, dict[str, Any]] = {}  # Alpaca id -> order JSON
        # scripted answers to POST /v2/orders, used in turn; then 200 and the order is created.
        # ("status", code, headers, body) | ("reset_after_create",) | ("reset",)
        self.post_script: list[tuple[Any, ...]] = []
        self.activities: list[dict[str, Any]] = []
        self.positions: list[dict[str, Any]] = []
        self.trade_ws: list[web.WebSocketResponse] = []
        self.trade_listening = asyncio.Event()
        self.data_ws: list[web.WebSocketResponse] = []
        self.data_subscribed = asyncio.Event()
        self.data_received: list[Any] = []
        self.auth_ok = True
        self._ids = itertools.count(1)
        app = web.Application()
        app.router.add_post("/v2/orders", self.post_order)
        app.router.add_get("/v2/orders:by_client_order_id", self.by_client_id)
        app.router.add_get("/v2/orders", self.list_orders)
        app.router.add_get("/v2/orders/{id}", self.get_order)
        app.router.add_delete("/v2/orders/{id}", self.delete_order)
        app.router.add_get("/v2/account/activities", self.get_activities)
        app.router.add_get("/v2/positions", self.get_positions)
        app.router.add_get("/v2/account", self.get_account)
        app.router.add_get("/stream", self.trade_stream)
        app.router.add_get("/v2/iex", self.data_stream)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    async def start(self) -> None:
        await self.server.start_server()

    async def stop(self) -> None:
        for ws in self.trade_ws + self.data_ws:
            await ws.close()
        await self.server.close()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    def posts(self) -> list[Any]:
        return [r[3] for r in self.requests if r[:2] == ("POST", "/v2/orders")]

    def _record(self, request: web.Request, body: Any = None) -> None:
        assert request.headers.get("APCA-API-KEY-ID") == KEY
        assert request.headers.get("APCA-API-SECRET-KEY") == SECRET
        self.requests.append((request.method, request.path, dict(request.query), body))

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        oid = f"b0b6dd9d-8b9b-48a9-ba46-b9d54906e4{next(self._ids):02d}"
        order = {"id": oid, "client_order_id": body["client_order_id"],
                 "created_at": "2024-01-02T14:30:00.123456789Z",
                 "updated_at": "2024-01-02T14:30:00.123456789Z",
                 "submitted_at": "2024-01-02T14:30:00.123456789Z", "symbol": body["symbol"],
                 "asset_class": "us_equity", "qty": body["qty"], "filled_qty": "0",
                 "filled_avg_price": None, "order_class": "simple", "type": body["type"],
                 "order_type": body["type"], "side": body["side"],
                 "time_in_force": body["time_in_force"], "limit_price": body.get("limit_price"),
                 "stop_price": body.get("stop_price"), "status": "accepted",
                 "extended_hours": False}
        self.orders[oid] = order
        return order

    async def post_order(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self._record(request, body)
        step = self.post_script.pop(0) if self.post_script else ("ok",)
        if step[0] == "status":
            return web.json_response(step[3], status=step[1], headers=step[2])
        if step[0] == "reset_after_create":
            self._create(body)
        if step[0] in ("reset", "reset_after_create"):
            assert request.transport is not None
            request.transport.close()  # the reply is lost: the client cannot know the outcome
            return web.Response()
        return web.json_response(self._create(body))

    async def by_client_id(self, request: web.Request) -> web.Response:
        self._record(request)
        coid = request.query["client_order_id"]
        for order in self.orders.values():
            if order["client_order_id"] == coid:
                return web.json_response(order)
        return web.json_response({"code": 40410000, "message": "order not found"}, status=404)

    async def list_orders(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response([o for o in self.orders.values()
                                  if o["status"] in ("new", "accepted", "partially_filled")])

    async def get_order(self, request: web.Request) -> web.Response:
        self._record(request)
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404)
        return web.json_response(order)

    async def delete_order(self, request: web.Request) -> web.Response:
        self._record(request)
        if request.match_info["id"] not in self.orders:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404)
        return web.Response(status=204)

    async def get_activities(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(self.activities)

    async def get_positions(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(self.positions)

    async def get_account(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"id": "acct", "currency": "USD", "cash": "100000.25",
                                  "equity": "100123.5", "status": "ACTIVE"})

    # ---- trade_updates stream

    async def trade_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.trade_ws.append(ws)
        auth = orjson.loads((await ws.receive()).data)
        ok = (self.auth_ok and auth.get("action") == "authenticate"
              and auth["data"] == {"key_id": KEY, "secret_key": SECRET})
        await ws.send_bytes(orjson.dumps({"stream": "authorization", "data": {
            "status": "authorized" if ok else "unauthorized", "action": "authenticate"}}))
        if not ok:
            await ws.close()
            return ws
        listen = orjson.loads((await ws.receive()).data)
        assert listen == {"action": "listen", "data": {"streams": ["trade_updates"]}}
        await ws.send_bytes(orjson.dumps({"stream": "listening",
                                          "data": {"streams": ["trade_updates"]}}))
        self.trade_listening.set()
        async for _ in ws:
            pass
        return ws

    async def push_update(self, data: dict[str, Any]) -> None:
        await self.trade_ws[-1].send_bytes(orjson.dumps({"stream": "trade_updates",
                                                         "data": data}))

    # ---- market data stream

    async def data_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.data_ws.append(ws)
        await ws.send_str('[{"T":"success","msg":"connected"}]')
        auth = orjson.loads((await ws.receive()).data)
        if auth != {"action": "auth", "key": KEY, "secret": SECRET}:
            await ws.send_str('[{"T":"error","code":402,"msg":"auth failed"}]')
            await ws.close()
            return ws
        await ws.send_str('[{"T":"success","msg":"authenticated"}]')
        sub = orjson.loads((await ws.receive()).data)
        self.data_received.append(sub)
        await ws.send_str(orjson.dumps([{"T": "subscription", "trades": sub.get("trades", []),
                                         "quotes": sub.get("quotes", []),
                                         "bars": sub.get("bars", [])}]).decode())
        self.data_subscribed.set()
        async for _ in ws:
            pass
        return ws


def order_update(event: str, order: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A trade_updates `data` object as Alpaca sends it."""
    return {"event": event, "timestamp": "2024-01-02T14:30:01.000000500Z", "order": order,
            **extra}
