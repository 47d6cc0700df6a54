"""Alpaca's `trade_updates` websocket: authenticate, listen, dispatch, reconnect.

Protocol (Trading API streaming, as alpaca-py speaks it): send
`{"action": "authenticate", "data": {"key_id": K, "secret_key": S}}`, expect
`{"stream": "authorization", "data": {"status": "authorized", ...}}`; send
`{"action": "listen", "data": {"streams": ["trade_updates"]}}`, expect
`{"stream": "listening", "data": {"streams": ["trade_updates"]}}`; then
`{"stream": "trade_updates", "data": {"event": ..., "order": {...}, ...}}` messages. Frames are
JSON, as text or binary (the paper host sends binary). The link counts as connected once the
listen is confirmed; a drop reports disconnected and reconnects with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import structlog

from himari.brokers.alpaca.backoff import Backoff
from himari.daemon.venue import CONNECTED, DISCONNECTED

log = structlog.get_logger("himari.alpaca")


class StreamError(RuntimeError):
    pass


def decode_frame(msg: aiohttp.WSMessage) -> Any:
    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        return orjson.loads(msg.data)
    raise StreamError(f"websocket closed ({msg.type.name})")


class TradeUpdatesStream:
    def __init__(self, url: str, key: str, secret: str, backoff: Backoff,
                 on_update: Callable[[dict[str, Any]], None],
                 on_state: Callable[[str], None]) -> None:
        self.url = url
        self._auth_msg = orjson.dumps(
            {"action": "authenticate", "data": {"key_id": key, "secret_key": secret}})
        self.backoff = backoff
        self.on_update, self.on_state = on_update, on_state
        self.connected = False
        self.connects = 0  # successful (listening) connections, for observability

    def __repr__(self) -> str:
        return f"TradeUpdatesStream({self.url}, connected={self.connected})"

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Forever: connect, authenticate, listen, dispatch; back off after a drop."""
        while True:
            try:
                async with session.ws_connect(self.url, heartbeat=30.0) as ws:
                    await self._handshake(ws)
                    async for msg in ws:
                        self._dispatch(decode_frame(msg))
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, StreamError, ValueError) as exc:
                log.warning("alpaca_stream_dropped", url=self.url, error=str(exc))
            if self.connected:
                self.connected = False
                self.on_state(DISCONNECTED)
            await self.backoff.wait()

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(self._auth_msg.decode())
        reply = decode_frame(await ws.receive())
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict) or data.get("status") != "authorized":
            status = data.get("status") if isinstance(data, dict) else None
            log.error("alpaca_stream_auth_failed", url=self.url, status=status)
            raise StreamError(f"trade_updates authentication refused (status {status!r})")
        await ws.send_str('{"action":"listen","data":{"streams":["trade_updates"]}}')

    def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            log.warning("alpaca_stream_unexpected", kind=type(msg).__name__)
            return
        stream = msg.get("stream")
        data = msg.get("data")
        if stream == "listening":
            streams = data.get("streams", []) if isinstance(data, dict) else []
            if "trade_updates" not in streams:
                raise StreamError(f"listen not confirmed for trade_updates (got {streams})")
            if not self.connected:
                self.connected = True
                self.connects += 1
                self.backoff.reset()
                self.on_state(CONNECTED)
        elif stream == "trade_updates" and isinstance(data, dict):
            try:
                self.on_update(data)
            except Exception:  # one bad update must not take the stream down
                log.exception("alpaca_trade_update_failed", event=data.get("event"))
        else:
            log.info("alpaca_stream_message", stream=stream)
