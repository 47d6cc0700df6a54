"""A stream client that goes away mid-write ends its writer quietly (no unhandled traceback).

Found under CPU load in tests/e2e/test_paper_faults.py[drop_ws]: the drop_ws fault closed the
socket between the queue and the write, aiohttp raised ClientConnectionResetError in the writer
task, and the handler's `await writer` turned it into "Error handling request".
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from himari.brokers.sandbox.streams import _Client, _serve


class _ClosingSocket:
    """Delivers one message, then fails every write as a closing transport does."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.messages: asyncio.Queue[Any] = asyncio.Queue()

    async def send_bytes(self, data: bytes) -> None:
        if self.sent:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        self.sent.append(data)

    def __aiter__(self) -> "_ClosingSocket":
        return self

    async def __anext__(self) -> Any:
        item = await self.messages.get()
        if item is None:
            raise StopAsyncIteration
        return item


async def test_writer_ends_when_the_client_is_gone() -> None:
    ws = _ClosingSocket()
    client = _Client(ws, binary=True)  # type: ignore[arg-type]
    client.queue.put_nowait(b"first")
    client.queue.put_nowait(b"second")  # fails: the transport is closing
    await asyncio.wait_for(client.writer(lambda: 0), timeout=5)  # returns, does not raise
    assert ws.sent == [b"first"]


async def test_the_handler_ends_cleanly_after_a_failed_write() -> None:
    ws = _ClosingSocket()
    client = _Client(ws, binary=True)  # type: ignore[arg-type]
    clients: set[_Client] = set()
    serve = asyncio.create_task(_serve(ws, client, clients, lambda m: None,  # type: ignore[arg-type]
                                       lambda: 0))
    client.queue.put_nowait(b"first")
    client.queue.put_nowait(b"second")
    await asyncio.sleep(0)
    ws.messages.put_nowait(None)  # the client's side of the socket closes
    await asyncio.wait_for(serve, timeout=5)  # no exception escapes the handler
    assert client not in clients
