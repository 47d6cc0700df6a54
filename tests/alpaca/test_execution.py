"""AlpacaExecutionClient against the fake Alpaca: orders, retries, unknown outcomes, stream."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from himari.daemon.venue import OrderRequest

from .conftest import Recorder
from .fake_alpaca import FakeAlpaca, order_update


def req(coid: str = "C1", side: int = 1, qty: int = 3, order_type: str = "limit",
        price: int | None = 15001, tif: str = "day", iid: str = "AAPL") -> OrderRequest:
    return OrderRequest(client_order_id=coid, instrument_id=iid, side=side, quantity=qty,
                        order_type=order_type, price=price, time_in_force=tif, ts_ns=1)


async def drain(client) -> None:
    async with asyncio.timeout(5):
        await client.drain()


async def test_submit_posts_exact_body_and_new_is_accepted(fake: FakeAlpaca, client) -> None:
    client.submit(req())
    client.submit(req("C2", side=-1, qty=1, order_type="stop", price=14950, tif="gtc"))
    client.submit(req("C3", side=-1, qty=2, order_type="market", price=None, tif="ioc",
                      iid="MSFT"))
    await drain(client)
    assert fake.posts() == [
        {"symbol": "AAPL", "qty": "3", "side": "buy", "type": "limit", "time_in_force": "day",
         "client_order_id": "C1", "limit_price": "150.01"},
        {"symbol": "AAPL", "qty": "1", "side": "sell", "type": "stop", "time_in_force": "gtc",
         "client_order_id": "C2", "stop_price": "149.50"},
        {"symbol": "MSFT", "qty": "2", "side": "sell", "type": "market",
         "time_in_force": "ioc", "client_order_id": "C3"}]
    order = next(iter(fake.orders.values()))
    await fake.push_update(order_update("new", order | {"status": "new"}))
    rec: Recorder = client.rec
    await rec.until(lambda: rec.named("on_accepted"))
    assert rec.named("on_accepted") == [("C1", order["id"], 1704205801000000500)]


async def test_invalid_request_is_rejected_at_once_without_a_post(fake, client) -> None:
    client.submit(req("C9", iid="TSLA"))
    client.submit(req("C8", order_type="limit", price=None))
    await drain(client)
    rejected = client.rec.named("on_rejected")
    assert [r[0] for r in rejected] == ["C9", "C8"]
    assert "TSLA" in rejected[0][1] and "needs a price" in rejected[1][1]
    assert fake.posts() == []


async def test_429_waits_for_retry_after_then_sends_once(fake, client) -> None:
    fake.post_script = [("status", 429, {"Retry-After": "2"}, {"message": "rate limit exceeded"})]
    client.submit(req("C1"))
    client.submit(req("C2"))
    await drain(client)
    assert [p["client_order_id"] for p in fake.posts()] == ["C1", "C1", "C2"]
    assert sorted(o["client_order_id"] for o in fake.orders.values()) == ["C1", "C2"]
    assert 2.0 in client.sleeps.delays
    assert client.rec.named("on_rejected") == []


async def test_unknown_post_outcome_is_resolved_by_lookup_not_resent(fake, client) -> None:
    fake.post_script = [("reset_after_create",)]
    client.submit(req("C1"))
    client.cancel("C1", 2)
    await drain(client)
    assert len(fake.posts()) == 1
    lookups = [r for r in fake.requests if r[1] == "/v2/orders:by_client_order_id"]
    assert lookups and lookups[0][2] == {"client_order_id": "C1"}
    (oid,) = fake.orders
    # the cancel uses the id the lookup found
    assert ("DELETE", f"/v2/orders/{oid}") in [r[:2] for r in fake.requests]
    assert client.rec.named("on_rejected") == []


async def test_unknown_post_outcome_not_at_alpaca_is_rejected(fake, client) -> None:
    fake.post_script = [("reset",)]
    client.submit(req("C1"))
    await drain(client)
    assert len(fake.posts()) == 1 and fake.orders == {}
    (rejected,) = client.rec.named("on_rejected")
    assert rejected[0] == "C1" and "does not know the client order id" in rejected[1]


async def test_5xx_is_looked_up_then_retried_with_backoff(fake, client) -> None:
    fake.post_script = [("status", 503, {}, {"message": "service unavailable"})]
    client.submit(req("C1"))
    await drain(client)
    assert [r[1] for r in fake.requests] == ["/v2/orders", "/v2/orders:by_client_order_id",
                                             "/v2/orders"]
    assert len(fake.orders) == 1 and 0.25 in client.sleeps.delays


async def test_4xx_is_an_immediate_reject_with_alpacas_message(fake, client) -> None:
    fake.post_script = [("status", 403, {}, {"code": 40310000,
                                             "message": "insufficient buying power"})]
    client.submit(req("C1"))
    await drain(client)
    (rejected,) = client.rec.named("on_rejected")
    assert rejected[0] == "C1" and "HTTP 403" in rejected[1]
    assert "insufficient buying power" in rejected[1]
    assert len(fake.posts()) == 1


async def test_stream_events_reach_the_listener_in_order(fake, client) -> None:
    client.submit(req("C1", qty=5))
    await drain(client)
    (order,) = fake.orders.values()
    await fake.push_update(order_update("partial_fill", order | {"filled_qty": "2"},
                                        execution_id="e-1", price="150.01", qty="2",
                                        position_qty="2"))
    await fake.push_update(order_update("fill", order | {"filled_qty": "5"},
                                        execution_id="e-2", price="150", qty="3",
                                        position_qty="5"))
    await fake.push_update(order_update("canceled", order))
    await fake.push_update(order_update("expired", order))
    await fake.push_update(order_update("rejected", order))
    await fake.push_update(order_update("pending_cancel", order))
    rec: Recorder = client.rec
    await rec.until(lambda: len([c for c in rec.calls if c[0] != "on_connection"]) >= 5)
    ts = 1704205801000000500
    fills = [(c[1], c[2]) for c in rec.calls if c[0] == "on_fill"]
    assert fills == [
        (("C1", "e-1", 2, 15001, Decimal(0), "", ts), {"instrument_id": "AAPL", "side": 1}),
        (("C1", "e-2", 3, 15000, Decimal(0), "", ts), {"instrument_id": "AAPL", "side": 1})]
    assert [c[0] for c in rec.calls if c[0] != "on_connection"] == [
        "on_fill", "on_fill", "on_cancelled", "on_expired", "on_rejected"]


async def test_fill_off_the_tick_grid_is_refused_loudly(fake, client) -> None:
    from structlog.testing import capture_logs

    client.submit(req("C1"))
    await drain(client)
    (order,) = fake.orders.values()
    with capture_logs() as logs:
        await fake.push_update(order_update("fill", order, execution_id="e-1",
                                            price="150.005", qty="3"))
        await fake.push_update(order_update("canceled", order))
        await client.rec.until(lambda: client.rec.named("on_cancelled"))
    assert client.rec.named("on_fill") == []
    bad = [e for e in logs if e["event"] == "alpaca_fill_unbookable"]
    assert bad and "150.005" in bad[0]["error"] and "tick_size 0.01" in bad[0]["error"]
    assert client.counters["updates_unbookable"] == 1


async def test_dropped_stream_reconnects_and_reports_the_state(fake, client) -> None:
    rec: Recorder = client.rec
    assert [c[1][0] for c in rec.calls if c[0] == "on_connection"] == ["connected"]
    fake.trade_listening.clear()
    await fake.trade_ws[-1].close()
    await rec.until(lambda: len(rec.named("on_connection")) >= 3)
    assert [a[0] for a in rec.named("on_connection")] == ["connected", "disconnected",
                                                          "connected"]
    assert client.connected and len(fake.trade_ws) == 2
    assert client.sleeps.delays[-1] == 0.25  # first backoff step (jitter 1.0)
    # the new link delivers
    client.submit(req("C1"))
    await drain(client)
    (order,) = fake.orders.values()
    await fake.push_update(order_update("new", order))
    await rec.until(lambda: rec.named("on_accepted"))


async def test_backoff_grows_while_the_stream_cannot_authenticate(fake) -> None:
    from himari.brokers.alpaca.client import AlpacaExecutionClient

    from .conftest import ENV, INSTRUMENTS, Sleeps, config

    fake.auth_ok = False
    sleeps = Sleeps()
    c = AlpacaExecutionClient(config(fake), INSTRUMENTS, sleep=sleeps, jitter=lambda: 1.0,
                              env=ENV)
    c.set_listener(Recorder())
    await c.connect()
    try:
        async with asyncio.timeout(5):
            while len(sleeps.delays) < 6:
                await asyncio.sleep(0)
    finally:
        await c.close()
    assert sleeps.delays[:6] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]  # doubling, capped
    assert not c.connected


async def test_duplicate_client_id_answer_is_resolved_by_lookup(fake, client) -> None:
    """A 422 'client_order_id must be unique' means an earlier try placed the order."""
    fake.post_script = [("status", 503, {}, {"message": "bad gateway"})]
    client.submit(req("C1"))
    await drain(client)
    (oid,) = fake.orders
    fake.post_script = [("status", 422, {}, {"code": 40010001,
                                             "message": "client_order_id must be unique"})]
    client.submit(req("C1"))
    client.cancel("C1", 3)
    await drain(client)
    assert client.rec.named("on_rejected") == []
    assert ("DELETE", f"/v2/orders/{oid}") in [r[:2] for r in fake.requests]


async def test_5xx_until_the_retries_run_out_is_a_reject(fake, client) -> None:
    fake.post_script = [("status", 500, {}, {"message": "internal error"})] * 6
    client.submit(req("C1"))
    await drain(client)
    assert len(fake.posts()) == 6 and fake.orders == {}  # max_retries = 5: 6 tries
    (rejected,) = client.rec.named("on_rejected")
    assert "HTTP 500 after 6 attempts" in rejected[1]
