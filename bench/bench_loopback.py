"""Latency over loopback through the Alpaca adapter, against baselines in the same run.

A minimal server on 127.0.0.1 speaks the part of Alpaca's protocol the two paths need: POST
/v2/orders (it stamps each order's arrival) and the trade_updates stream (it stamps each fill
message just before it sends it). In one process, on one clock:
  1. decision to wire: `OrderManager.submit` (journal written, order sent through the adapter's
     queue and aiohttp) until the POST arrives at the server;
  2. fill to position: a `fill` trade update leaving the server until the `PositionUpdate` is
     published on the bus (stream read, decode, exec-id dedupe, journal, position book);
baselines: a bare aiohttp POST to the same server, and a bare WebSocket message to a bare client.
Prints p50/p99 (microseconds) and the ratio to the baseline.
Usage: python bench/bench_loopback.py [--orders N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import aiohttp
import numpy as np
import orjson
from aiohttp import web

from himari.brokers.alpaca.client import AlpacaExecutionClient
from himari.brokers.alpaca.config import AlpacaConfig
from himari.daemon.bus import Bus
from himari.daemon.clock import LiveClock
from himari.daemon.events import OrderIntent, PositionUpdate
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.logs import configure_logging
from himari.daemon.orders.journal import Journal
from himari.daemon.orders.manager import OrderManager

P = time.perf_counter_ns
INST = Instrument(id="AAPL", tick_size=Decimal("0.01"), lot_size=Decimal(1))


class Server:
    def __init__(self) -> None:
        self.arrivals: dict[str, int] = {}  # client order id -> arrival (perf ns)
        self.orders: dict[str, dict] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.sent: list[int] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/orders", self.post_order)
        app.router.add_get("/v2/clock", self.clock)
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/bare", self.bare)
        return app

    async def post_order(self, request: web.Request) -> web.Response:
        t = P()
        body = await request.json()
        coid = body.get("client_order_id") or "bare"
        self.arrivals[coid] = t
        order = {"id": str(uuid.uuid4()), "client_order_id": coid, "symbol": body.get("symbol"),
                 "side": body.get("side"), "qty": body.get("qty"), "filled_qty": "0",
                 "status": "accepted", "type": body.get("type"),
                 "time_in_force": body.get("time_in_force")}
        self.orders[coid] = order
        return web.json_response(order)

    async def clock(self, request: web.Request) -> web.Response:
        return web.json_response({"is_open": True, "timestamp": "2026-11-30T00:00:00Z",
                                  "next_open": "2026-12-01T14:30:00Z",
                                  "next_close": "2026-11-30T21:00:00Z"})

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # authenticate
        await ws.send_bytes(orjson.dumps({"stream": "authorization",
                                          "data": {"status": "authorized",
                                                   "action": "authenticate"}}))
        await ws.receive()  # listen
        await ws.send_bytes(orjson.dumps({"stream": "listening",
                                          "data": {"streams": ["trade_updates"]}}))
        self.sockets.append(ws)
        async for _ in ws:
            pass
        return ws

    async def bare(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        async for _ in ws:
            pass
        return ws

    async def send_fill(self, ws: web.WebSocketResponse, coid: str) -> None:
        o = dict(self.orders[coid], filled_qty=self.orders[coid]["qty"], status="filled")
        msg = orjson.dumps({"stream": "trade_updates", "data": {
            "event": "fill", "execution_id": str(uuid.uuid4()), "order": o, "price": "100.00",
            "qty": o["qty"], "position_qty": o["qty"], "timestamp": "2026-11-30T15:00:00Z"}})
        self.sent.append(P())
        await ws.send_bytes(msg)


def pct(a: list[int]) -> tuple[float, float]:
    x = np.asarray(a, dtype=np.float64) / 1000.0
    return float(np.percentile(x, 50)), float(np.percentile(x, 99))


async def run(n: int, tmp: Path) -> None:
    srv = Server()
    runner = web.AppRunner(srv.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    os.environ.update(APCA_API_KEY_ID="PKBENCH", APCA_API_SECRET_KEY="bench-secret")

    bus, clock = Bus(), LiveClock()
    cfg = AlpacaConfig(base_url=url)
    client = AlpacaExecutionClient(cfg, {"AAPL": INST}, clock)
    journal = Journal(tmp / "journal.jsonl", fsync=False)
    om = OrderManager(bus, clock, IdSource("B"), {"AAPL": INST}, client, journal)
    updated: list[int] = []
    bus.subscribe(PositionUpdate, lambda e: updated.append(P()), name="bench")
    await client.connect()
    while not client.connected:
        await asyncio.sleep(0.01)
    stream_ws = srv.sockets[-1]

    wire: list[int] = []
    fill: list[int] = []
    for i in range(n + 20):
        intent = OrderIntent(event_id=f"I-{i}", ts_ns=clock.now_ns(), decision_id=f"D-{i}",
                             strategy_id="bench", instrument_id="AAPL", side=1 if i % 2 else -1,
                             quantity=1)
        t0 = P()
        order = om.submit(intent, 1)
        while order.client_order_id not in srv.arrivals:
            await asyncio.sleep(0)
        k = len(updated)
        await srv.send_fill(stream_ws, order.client_order_id)
        while len(updated) == k:
            await asyncio.sleep(0)
        if i >= 20:  # warm-up excluded
            wire.append(srv.arrivals[order.client_order_id] - t0)
            fill.append(updated[-1] - srv.sent[-1])

    base_post: list[int] = []
    base_ws: list[int] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}/bare") as bare:
            await asyncio.sleep(0.05)
            server_side = srv.sockets[-1]
            for i in range(n + 20):
                t0 = P()
                async with http.post(f"{url}/v2/orders", json={"client_order_id": f"b{i}"}) as r:
                    await r.read()
                if i >= 20:
                    base_post.append(srv.arrivals[f"b{i}"] - t0)
                t1 = P()
                await server_side.send_bytes(b'{"x":1}')
                await bare.receive()
                if i >= 20:
                    base_ws.append(P() - t1)
    await client.close()
    journal.close()
    await runner.cleanup()

    print(f"loopback latency through the Alpaca adapter, {n} orders, microseconds")
    print(f"  {'path':<44}{'p50':>9}{'p99':>9}{'p50/base':>10}")
    b1, b2 = pct(base_post), pct(base_ws)
    for label, samples, base in (("decision -> order bytes at the server", wire, b1[0]),
                                 ("  baseline: bare aiohttp POST", base_post, b1[0]),
                                 ("fill message sent -> PositionUpdate on the bus", fill, b2[0]),
                                 ("  baseline: bare WebSocket message", base_ws, b2[0])):
        p50, p99 = pct(samples)
        print(f"  {label:<44}{p50:>9.1f}{p99:>9.1f}{p50 / base:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=1000)
    args = ap.parse_args()
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.orders, Path(tmp)))


if __name__ == "__main__":
    main()
