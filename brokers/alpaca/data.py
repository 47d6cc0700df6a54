"""`AlpacaDataClient`: Alpaca's market data websocket as a DataClient (daemon/feeds/client.py).

Protocol (Market Data API v2 stream, JSON frames: arrays of messages with a type `T`): on connect
the server sends `[{"T":"success","msg":"connected"}]`; the client sends
`{"action":"auth","key":K,"secret":S}` and expects `[{"T":"success","msg":"authenticated"}]`
(`{"T":"error","code":..,"msg":..}` otherwise), then
`{"action":"subscribe","trades":[..],"quotes":[..],"bars":[..]}`, answered by
`{"T":"subscription",...}`. Data: trades `{"T":"t","S":sym,"p":price,"s":size,"t":time,...}`,
quotes `{"T":"q","S":sym,"bp","bs","ap","as","t",...}`, minute bars `{"T":"b",...}`.

Each frame becomes one `TickBatch` per run of same-symbol, same-kind messages in non-decreasing
time. A tick whose price is off the instrument's tick grid (or size off its lot grid) is refused:
logged with the instrument and the value, counted, not delivered. Bars are not ticks: the latest
per instrument is kept in `last_bar` (Alpaca's own JSON) for whoever wants it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import aiohttp
import numpy as np
import orjson
import structlog

from himari.brokers.alpaca import convert
from himari.brokers.alpaca.backoff import Backoff, Sleep
from himari.brokers.alpaca.client import read_keys
from himari.brokers.alpaca.config import AlpacaConfig
from himari.brokers.alpaca.stream import StreamError, decode_frame
from himari.daemon.clock import Clock
from himari.daemon.events import TickBatch
from himari.daemon.feeds.client import KINDS, checked_subscription
from himari.daemon.instruments import Instrument

log = structlog.get_logger("himari.alpaca")

_CHANNEL = {"trades": "trades", "quotes": "quotes", "bars": "bars"}


class AlpacaDataClient:
    def __init__(self, cfg: AlpacaConfig, instruments: dict[str, Instrument],
                 clock: Clock | None = None, *, sleep: Sleep = asyncio.sleep,
                 jitter: Callable[[], float] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.cfg, self.instruments, self._clock = cfg, instruments, clock
        self._env = os.environ if env is None else env
        self._symbol = {iid: cfg.symbol(iid) for iid in instruments}
        self._instrument_of = {sym: iid for iid, sym in self._symbol.items()}
        self.subscriptions: dict[str, tuple[str, ...]] = {}
        kw: dict[str, Any] = {"sleep": sleep} | ({"jitter": jitter} if jitter else {})
        self.backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s, **kw)
        self._auth: bytes = b""
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.last_bar: dict[str, dict[str, Any]] = {}
        self.history_ticks = 0  # no socket history (the live runner logs this count)
        self.counters = {"ticks": 0, "refused": 0, "connects": 0}

    def __repr__(self) -> str:
        return f"AlpacaDataClient({self.cfg.market_data_url}, connected={self.connected})"

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def connect(self) -> None:
        """Read the keys and open the HTTP session; the socket itself is opened (and reopened)
        by `stream()`, which owns it."""
        key, secret = read_keys(self.cfg, self._env)
        self._auth = orjson.dumps({"action": "auth", "key": key, "secret": secret})
        if self._session is None:
            self._session = aiohttp.ClientSession()

    def subscribe(self, instrument_id: str, kinds: tuple[str, ...] = ("trades",)) -> None:
        self.subscriptions[instrument_id] = checked_subscription(self.instruments,
                                                                 instrument_id, kinds)

    def history(self) -> Iterator[TickBatch]:
        """No warm-up history from the socket (Alpaca's REST bars are not fetched here)."""
        return iter(())

    def _subscribe_msg(self) -> bytes:
        """What `subscribe` asked for; nothing asked: trades and quotes of every instrument."""
        subs = self.subscriptions or {i: ("trades", "quotes") for i in self.instruments}
        msg: dict[str, Any] = {"action": "subscribe"}
        for kind in KINDS:
            syms = [self._symbol[i] for i, kinds in subs.items() if kind in kinds]
            if syms:
                msg[_CHANNEL[kind]] = syms
        return orjson.dumps(msg)

    async def stream(self) -> AsyncIterator[TickBatch]:
        """Ticks as they come, forever; reconnects (auth, subscribe again) with backoff."""
        if self._session is None:
            raise RuntimeError("AlpacaDataClient.stream() before connect()")
        while True:
            try:
                async with self._session.ws_connect(self.cfg.market_data_url,
                                                    heartbeat=30.0) as ws:
                    await self._handshake(ws)
                    self._ws = ws
                    self.counters["connects"] += 1
                    self.backoff.reset()
                    async for msg in ws:
                        for batch in self.batches(decode_frame(msg)):
                            yield batch
            except (aiohttp.ClientError, asyncio.TimeoutError, StreamError, ValueError) as exc:
                log.warning("alpaca_data_dropped", url=self.cfg.market_data_url, error=str(exc))
            self._ws = None
            await self.backoff.wait()

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._expect(decode_frame(await ws.receive()), "connected")
        await ws.send_str(self._auth.decode())
        self._expect(decode_frame(await ws.receive()), "authenticated")
        await ws.send_str(self._subscribe_msg().decode())

    def _expect(self, frame: Any, what: str) -> None:
        first = frame[0] if isinstance(frame, list) and frame else frame
        if isinstance(first, dict) and first.get("T") == "success" and first.get("msg") == what:
            return
        if isinstance(first, dict) and first.get("T") == "error":
            log.error("alpaca_data_error", code=first.get("code"), msg=first.get("msg"))
            raise StreamError(f"market data stream error {first.get('code')}: {first.get('msg')}")
        raise StreamError(f"market data stream: expected {what!r}, got {str(first)[:200]}")

    def batches(self, frame: Any) -> list[TickBatch]:
        """One frame's messages -> TickBatches (runs of one symbol and kind, time ascending)."""
        runs: list[tuple[str, str, list[tuple[int, ...]]]] = []
        for m in frame if isinstance(frame, list) else [frame]:
            if not isinstance(m, dict):
                continue
            kind = m.get("T")
            if kind in ("t", "q"):
                row = self._row(m)
                if row is None:
                    continue
                iid = self._instrument_of[str(m.get("S"))]
                last = runs[-1] if runs else None
                if last is not None and last[:2] == (iid, kind) and last[2][-1][0] <= row[0]:
                    last[2].append(row)
                else:
                    runs.append((iid, kind, [row]))
            elif kind == "b":
                iid = self._instrument_of.get(str(m.get("S")))
                if iid is not None:
                    self.last_bar[iid] = m
            elif kind == "error":
                log.error("alpaca_data_error", code=m.get("code"), msg=m.get("msg"))
            elif kind == "subscription":
                log.info("alpaca_data_subscribed", trades=m.get("trades"), quotes=m.get("quotes"),
                         bars=m.get("bars"))
        out = []
        for iid, kind, rows in runs:
            a = np.array(rows, dtype=np.int64)
            self.counters["ticks"] += len(rows)
            if kind == "t":
                out.append(TickBatch.from_trades(iid, a[:, 0], a[:, 1], a[:, 2]))
            else:
                out.append(TickBatch.from_quotes(iid, a[:, 0], a[:, 1], a[:, 2], a[:, 3]))
        return out

    def _row(self, m: dict[str, Any]) -> tuple[int, ...] | None:
        """(ts, price, size) for a trade, (ts, bid, ask, min size) for a quote; None: refused."""
        sym = str(m.get("S"))
        iid = self._instrument_of.get(sym)
        if iid is None:
            return None
        inst = self.instruments[iid]
        try:
            ts = convert.parse_ts(str(m.get("t")))
            if m["T"] == "t":
                return (ts, inst.price_to_ticks(convert.dec(m.get("p"), "trade price")),
                        inst.qty_to_lots(convert.dec(m.get("s", 0), "trade size")))
            size = min(inst.qty_to_lots(convert.dec(m.get("bs", 0), "bid size")),
                       inst.qty_to_lots(convert.dec(m.get("as", 0), "ask size")))
            return (ts, inst.price_to_ticks(convert.dec(m.get("bp"), "bid price")),
                    inst.price_to_ticks(convert.dec(m.get("ap"), "ask price")), size)
        except (ValueError, KeyError) as exc:
            self.counters["refused"] += 1
            log.error("alpaca_tick_refused", instrument_id=iid, error=str(exc))
            return None

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None
