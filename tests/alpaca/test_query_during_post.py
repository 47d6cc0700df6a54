"""A status query for an order whose POST is still queued or running (held by a 429's
Retry-After) waits for the POST to end: asking Alpaca earlier gets a 404 that the order manager
would take for "absent at the venue" and reject an order that is then placed and fills (found by
tests/e2e/test_paper_faults.py under http_429 with reconciliation after a reconnect)."""

from __future__ import annotations

import asyncio

from himari.brokers.alpaca.client import AlpacaExecutionClient

from .conftest import ENV, INSTRUMENTS, Recorder, config
from .fake_alpaca import FakeAlpaca
from .test_execution import req


class GatedSleep:
    """Injected sleep that holds every wait until released (the Retry-After in flight)."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.waiting.set()
        await self.release.wait()


async def test_query_waits_for_a_post_held_by_a_429(fake: FakeAlpaca) -> None:
    fake.post_script = [("status", 429, {"Retry-After": "1"}, {"message": "rate limit exceeded"})]
    sleep = GatedSleep()
    c = AlpacaExecutionClient(config(fake), INSTRUMENTS, sleep=sleep, jitter=lambda: 1.0,
                              env=ENV)
    rec = Recorder()
    c.set_listener(rec)
    await c.connect()
    try:
        c.submit(req("C1"))
        c.submit(req("C2"))  # queued behind C1
        await asyncio.wait_for(sleep.waiting.wait(), 5)  # C1's POST waits for Retry-After
        queries = [asyncio.create_task(c.query_order(coid)) for coid in ("C1", "C2")]
        await asyncio.sleep(0.05)
        assert not any(q.done() for q in queries)  # not answered "absent" while unsent
        sleep.release.set()
        reports = await asyncio.wait_for(asyncio.gather(*queries), 5)
        assert [r.client_order_id for r in reports] == ["C1", "C2"]
        assert all(r is not None and r.status == "accepted" for r in reports)
        assert [p["client_order_id"] for p in fake.posts()] == ["C1", "C1", "C2"]
        # an order whose POST has ended is looked up at once
        assert (await asyncio.wait_for(c.query_order("C1"), 5)).client_order_id == "C1"
        assert await asyncio.wait_for(c.query_order("C-never"), 5) is None
    finally:
        await c.close()
