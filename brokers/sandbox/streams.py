"""The sandbox's WebSockets, in Alpaca's protocols.

- `/stream`: the trade_updates stream (what alpaca-py's `TradingStream` speaks): the client sends
  `{"action": "authenticate", "data": {"key_id", "secret_key"}}`, then
  `{"action": "listen", "data": {"streams": ["trade_updates"]}}`; every message is a JSON object in
  a binary frame, as Alpaca's paper stream sends them.
- `/v2/iex`, `/v2/sip`, `/v2/test`: market data (`StockDataStream`): `[{"T": "success", "msg":
  "connected"}]` on connect, `{"action": "auth", "key", "secret"}`, `{"action": "subscribe",
  "trades": [...], "quotes": [...], "bars": [...]}`; every frame is an array of messages. MessagePack
  (timestamps as msgpack Timestamps) when the client asked for it with `Content-Type:
  application/msgpack`, as alpaca-py does, else JSON text (timestamps RFC 3339).
Trade updates go through `TradeHub`, which applies the duplicate / reorder / delay faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import msgpack
import orjson
import structlog
from aiohttp import WSMsgType, web

from himari.brokers.sandbox.faults import Faults
from himari.brokers.sandbox.market import Ticks
from himari.daemon.instruments import Instrument

log = structlog.get_logger("himari.sandbox")
MINUTE_NS = 60_000_000_000
AUTH_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0  # a peer that never answers our close frame holds a shutdown this long


class Keys:
    def __init__(self, key_id: str, secret: str) -> None:
        self._key_id, self._secret = key_id.encode(), secret.encode()

    def check(self, key_id: Any, secret: Any) -> bool:
        if not isinstance(key_id, str) or not isinstance(secret, str):
            return False
        ok_id = hmac.compare_digest(key_id.encode(), self._key_id)
        return hmac.compare_digest(secret.encode(), self._secret) and ok_id

    def __repr__(self) -> str:  # never shows the keys
        return "Keys(<hidden>)"


class _Client:
    """One connected socket and the task that writes to it (owned by its handler)."""

    def __init__(self, ws: web.WebSocketResponse, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def writer(self, delay_ms: Callable[[], int]) -> None:
        while True:
            data = await self.queue.get()
            delay = delay_ms()
            if delay:
                await asyncio.sleep(delay / 1000)  # the delay_ms fault
            try:
                if self.binary:
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data.decode())
            except ConnectionResetError:
                # The client went away (or the drop_ws fault closed it) between the queue and
                # the write: what was not sent is what a real broker loses with a dropped socket;
                # the client reconciles over REST when it reconnects. The reader ends the handler.
                return


async def _serve(ws: web.WebSocketResponse, client: _Client, clients: set[_Client],
                 on_message: Callable[[Any], None], delay_ms: Callable[[], int]) -> None:
    """Read until the socket closes while the writer sends; both end with the handler."""
    clients.add(client)
    writer = asyncio.create_task(client.writer(delay_ms))
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                on_message(msg.data)
    finally:
        clients.discard(client)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


class TradeHub:
    def __init__(self, keys: Keys, faults: Faults) -> None:
        self.keys, self.faults = keys, faults
        self.clients: set[_Client] = set()  # listening to trade_updates
        self.sockets: set[web.WebSocketResponse] = set()
        self._held: bytes | None = None  # a message held back by the reorder fault

    def publish(self, msg: dict[str, Any]) -> None:
        data = orjson.dumps(msg)
        f = self.faults
        out = [data]
        if f.reorder > 0 and self._held is None:
            f.reorder -= 1
            self._held = data
            return
        if self._held is not None:
            out, self._held = [data, self._held], None
        if f.duplicate > 0:
            f.duplicate -= 1
            out = [d for d in out for _ in (0, 1)]
        for client in list(self.clients):
            for d in out:
                client.queue.put_nowait(d)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            first = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT_S)
            body = _json(first.data) if first.type in (WSMsgType.TEXT, WSMsgType.BINARY) else None
            # {"action": "authenticate", "data": {"key_id", "secret_key"}} (what alpaca-py
            # sends), or the newer {"action": "auth", "key", "secret"}
            data = body.get("data") if isinstance(body, dict) else None
            creds = ((data.get("key_id"), data.get("secret_key")) if isinstance(data, dict)
                     else (body.get("key"), body.get("secret")) if isinstance(body, dict)
                     else (None, None))
            if not (isinstance(body, dict) and body.get("action") in ("authenticate", "auth")
                    and self.keys.check(*creds)):
                await ws.send_bytes(orjson.dumps({"stream": "authorization", "data": {
                    "action": "authenticate", "status": "unauthorized"}}))
                await ws.close()
                return ws
            await ws.send_bytes(orjson.dumps({"stream": "authorization", "data": {
                "action": "authenticate", "status": "authorized"}}))
            client = _Client(ws, binary=True)

            def on_message(raw: Any) -> None:
                body = _json(raw)
                if isinstance(body, dict) and body.get("action") == "listen":
                    streams = (body.get("data") or {}).get("streams") or []
                    listening = [s for s in streams if s == "trade_updates"]
                    client.queue.put_nowait(orjson.dumps(
                        {"stream": "listening", "data": {"streams": listening}}))
                    if listening:
                        self.clients.add(client)
                    else:
                        self.clients.discard(client)

            await _serve(ws, client, set(), on_message, lambda: self.faults.delay_ms)
            self.clients.discard(client)
        except asyncio.TimeoutError:
            await ws.close()
        finally:
            self.sockets.discard(ws)
        return ws


class DataHub:
    def __init__(self, keys: Keys, instruments: dict[str, Instrument]) -> None:
        self.keys, self.instruments = keys, instruments
        self.clients: set[_Client] = set()
        self.sockets: set[web.WebSocketResponse] = set()
        self._subs: dict[_Client, dict[str, set[str]]] = {}
        self._last_quote: dict[str, tuple[int, int]] = {}
        self._bars: dict[str, list[int]] = {}  # symbol -> [minute, o, h, l, c, volume, n, value]
        self._trade_id = 0

    def on_ticks(self, t: Ticks) -> None:
        """Turn a run of ticks into Alpaca messages for the clients subscribed to them. Minute
        bars are kept whether or not anyone listens, so every bar sent is a whole minute. Quote
        data gives quotes only; trades give quotes too where their bid/ask are known."""
        symbol = t.symbol
        wanted = [(c, s) for c, s in self._subs.items()
                  if any(symbol in s[ch] or "*" in s[ch] for ch in ("trades", "quotes", "bars"))]
        inst = self.instruments[symbol]
        trades: list[dict[str, Any]] = []
        quotes: list[dict[str, Any]] = []
        bars: list[dict[str, Any]] = []
        lot = float(inst.lot_size)
        px = inst.ticks_to_price
        for k in range(len(t.ts_ns)):
            ns, price, size = int(t.ts_ns[k]), int(t.price[k]), int(t.size[k])
            bid, ask = int(t.bid[k]), int(t.ask[k])
            if wanted and bid < ask and self._last_quote.get(symbol) != (bid, ask):
                self._last_quote[symbol] = (bid, ask)
                quotes.append({"T": "q", "S": symbol, "bx": "V", "bp": float(px(bid)), "bs": 1,
                               "ax": "V", "ap": float(px(ask)), "as": 1, "c": ["R"], "z": "C",
                               "t": ns})
            if t.quotes:
                continue
            self._trade_id += 1
            bar = self._bars.get(symbol)
            minute = ns - ns % MINUTE_NS
            if bar is not None and bar[0] != minute:
                bars.append(_bar_msg(symbol, bar, inst))
                bar = None
            if bar is None:
                bar = self._bars[symbol] = [minute, price, price, price, price, 0, 0, 0]
            bar[2], bar[3], bar[4] = max(bar[2], price), min(bar[3], price), price
            bar[5] += size
            bar[6] += 1
            bar[7] += size * price
            if not wanted:
                continue
            trades.append({"T": "t", "S": symbol, "i": self._trade_id, "x": "V",
                           "p": float(px(price)), "s": size * lot, "c": ["@"], "z": "C", "t": ns})
        for client, subs in wanted:
            out = [m for ch, msgs in (("trades", trades), ("quotes", quotes), ("bars", bars))
                   if symbol in subs[ch] or "*" in subs[ch] for m in msgs]
            if out:
                client.queue.put_nowait(_encode(out, client.binary))

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        binary = request.headers.get("Content-Type", "").startswith("application/msgpack")
        client = _Client(ws, binary)
        self.sockets.add(ws)
        authed = False

        def reply(msgs: list[dict[str, Any]]) -> None:
            client.queue.put_nowait(_encode(msgs, binary))

        def on_message(raw: Any) -> None:
            nonlocal authed
            try:
                body = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
            except ValueError:
                return reply([{"T": "error", "code": 400, "msg": "invalid syntax"}])
            action = body.get("action") if isinstance(body, dict) else None
            if action == "auth":
                if authed:
                    return reply([{"T": "error", "code": 403, "msg": "already authenticated"}])
                if not self.keys.check(body.get("key"), body.get("secret")):
                    reply([{"T": "error", "code": 402, "msg": "auth failed"}])
                    asyncio.get_running_loop().create_task(_close_soon(ws, client))
                    return None
                authed = True
                return reply([{"T": "success", "msg": "authenticated"}])
            if not authed:
                return reply([{"T": "error", "code": 401, "msg": "not authenticated"}])
            if action in ("subscribe", "unsubscribe"):
                subs = self._subs.setdefault(client, {"trades": set(), "quotes": set(),
                                                      "bars": set()})
                for ch in subs:
                    names = body.get(ch) or []
                    if action == "subscribe":
                        subs[ch] |= {n for n in names if n in self.instruments or n == "*"}
                    else:
                        subs[ch] -= set(names)
                return reply([{"T": "subscription", **{ch: sorted(s) for ch, s in subs.items()},
                               "updatedBars": [], "dailyBars": [], "statuses": [], "lulds": [],
                               "corrections": sorted(subs["trades"]),
                               "cancelErrors": sorted(subs["trades"])}])
            return reply([{"T": "error", "code": 400, "msg": "invalid syntax"}])

        reply([{"T": "success", "msg": "connected"}])
        try:
            await _serve(ws, client, self.clients, on_message, lambda: 0)
        finally:
            self._subs.pop(client, None)
            self.sockets.discard(ws)
        return ws


async def _close_soon(ws: web.WebSocketResponse, client: _Client) -> None:
    while not client.queue.empty():  # let the error reach the client first
        await asyncio.sleep(0.01)
    await ws.close()


def _bar_msg(symbol: str, bar: list[int], inst: Instrument) -> dict[str, Any]:
    px = inst.ticks_to_price
    vwap = float(px(bar[7]) / bar[5]) if bar[5] else float(px(bar[4]))
    return {"T": "b", "S": symbol, "o": float(px(bar[1])), "h": float(px(bar[2])),
            "l": float(px(bar[3])), "c": float(px(bar[4])), "v": bar[5] * float(inst.lot_size),
            "t": bar[0], "n": bar[6], "vw": vwap}


def _encode(msgs: list[dict[str, Any]], binary: bool) -> bytes:
    if binary:
        return msgpack.packb([{k: msgpack.Timestamp.from_unix_nano(v) if k == "t" else v
                               for k, v in m.items()} for m in msgs])
    return orjson.dumps([{k: _rfc3339(v) if k == "t" else v for k, v in m.items()} for m in msgs])


def _rfc3339(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


def _json(raw: Any) -> Any:
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None
