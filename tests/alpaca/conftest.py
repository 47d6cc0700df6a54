from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from himari.brokers.alpaca.client import AlpacaExecutionClient
from himari.brokers.alpaca.config import AlpacaConfig
from himari.daemon.instruments import Instrument

from .fake_alpaca import KEY, SECRET, FakeAlpaca

INSTRUMENTS = {"AAPL": Instrument(id="AAPL", tick_size=Decimal("0.01")),
               "MSFT": Instrument(id="MSFT", tick_size=Decimal("0.01"))}
ENV = {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}


class Recorder:
    """An ExecutionListener that records every callback and wakes waiters."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith("on_"):
            raise AttributeError(name)

        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))
            self._changed.set()
        return record

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c[1] for c in self.calls if c[0] == name]

    async def until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self._changed.clear()
                await self._changed.wait()


class Sleeps:
    """Injected sleep: records the delay and yields once (never waits on the wall clock)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def config(fake: FakeAlpaca, **kw: Any) -> AlpacaConfig:
    return AlpacaConfig(base_url=fake.http, stream_url=fake.ws + "/stream",
                        data_url=fake.ws + "/v2/iex", backoff_initial_s=0.25, backoff_max_s=4.0,
                        request_timeout_s=5.0, **kw)


@pytest.fixture
async def fake() -> Any:
    server = FakeAlpaca()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: FakeAlpaca) -> Any:
    """A connected client with a Recorder listener, its stream listening."""
    sleeps = Sleeps()
    c = AlpacaExecutionClient(config(fake), INSTRUMENTS, sleep=sleeps, jitter=lambda: 1.0,
                              env=ENV)
    rec = Recorder()
    c.set_listener(rec)
    c.sleeps = sleeps  # type: ignore[attr-defined]
    c.rec = rec  # type: ignore[attr-defined]
    await c.connect()
    await rec.until(lambda: c.connected)
    yield c
    await c.close()
