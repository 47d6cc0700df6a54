"""Alpaca Trading API v2 over HTTP: authenticated requests, 429 and 5xx handling.

Every request carries `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY`; the keys live only in the
session's headers, never in a log line, an exception or a repr. A 429 waits for its
`Retry-After` (capped; the backoff when absent) and asks again: the request was not taken. A
connection error or timeout raises `OutcomeUnknown`, since the server may or may not have acted
on it; the caller decides (an order is then looked up, never resent).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import structlog

from himari.brokers.alpaca.backoff import Backoff
from himari.brokers.alpaca.config import AlpacaConfig

log = structlog.get_logger("himari.alpaca")


class AlpacaError(RuntimeError):
    """Alpaca answered with an error status (message from its JSON body)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.status, self.api_message = status, message
        super().__init__(f"alpaca {method} {path}: HTTP {status}: {message}")


class OutcomeUnknown(RuntimeError):
    """The request may or may not have reached Alpaca (timeout, connection reset)."""


def _retry_after(headers: Any, cap: float) -> float | None:
    raw = headers.get("Retry-After")
    try:
        return min(max(float(raw), 0.0), cap) if raw is not None else None
    except ValueError:
        return None  # an HTTP-date: use the backoff instead


class AlpacaRest:
    def __init__(self, cfg: AlpacaConfig, key: str, secret: str, backoff: Backoff) -> None:
        self.cfg = cfg
        self._headers = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}
        self.backoff = backoff
        self.session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AlpacaRest({self.cfg.rest_url})"

    async def open(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout_s))
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      body: dict[str, Any] | None = None,
                      max_429: int | None = None) -> tuple[int, Any]:
        """One request, repeated only after a 429 (at most `max_429` times; None: until it is
        allowed). Returns (status, decoded JSON or None)."""
        session = await self.open()
        url = self.cfg.rest_url + path
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        limited = 0
        while True:
            try:
                async with session.request(method, url, params=params, data=data,
                                           headers=headers) as resp:
                    raw = await resp.read()
                    status, retry_after = resp.status, _retry_after(resp.headers,
                                                                    self.cfg.max_retry_after_s)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise OutcomeUnknown(f"alpaca {method} {path}: {type(exc).__name__}") from None
            if status != 429 or (max_429 is not None and limited >= max_429):
                try:
                    return status, orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    return status, {"message": raw[:200].decode("utf-8", "replace")}
            limited += 1
            log.warning("alpaca_rate_limited", method=method, path=path, retry_after=retry_after)
            await (self.backoff.sleep(retry_after) if retry_after is not None
                   else self.backoff.wait())

    async def query(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    ok_404: bool = False) -> Any:
        """A request without side effects (GET, DELETE of a cancel): retried with backoff on
        5xx and connection errors, up to `max_retries`. 404 -> None when `ok_404`."""
        tries = 0
        backoff = Backoff(self.cfg.backoff_initial_s, self.cfg.backoff_max_s,
                          sleep=self.backoff.sleep, jitter=self.backoff.jitter)
        while True:
            try:
                status, data = await self.request(method, path, params=params,
                                                  max_429=self.cfg.max_retries)
            except OutcomeUnknown:
                if tries >= self.cfg.max_retries:
                    raise
                status, data = 0, None
            if 200 <= status < 300:
                return data
            if status == 404 and ok_404:
                return None
            if status and status < 500:
                raise AlpacaError(method, path, status, _message(data))
            if tries >= self.cfg.max_retries:
                raise AlpacaError(method, path, status, _message(data))
            tries += 1
            log.warning("alpaca_retry", method=method, path=path, status=status, attempt=tries)
            await backoff.wait()


def _message(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("message", data))[:300]
    return str(data)[:300]
