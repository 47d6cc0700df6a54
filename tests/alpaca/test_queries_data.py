"""Status queries (reconciliation) and the market data client against the fake Alpaca."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import orjson

from himari.brokers.alpaca.data import AlpacaDataClient
from himari.daemon.events import TickKind
from himari.daemon.venue import AccountReport, FillReport, OrderStatusReport, PositionReport

from .conftest import ENV, INSTRUMENTS, Sleeps, config
from .fake_alpaca import FakeAlpaca, order_update
from .test_execution import drain, req


async def test_status_queries_map_to_the_venue_structs(fake: FakeAlpaca, client) -> None:
    client.submit(req("C1", qty=5))
    await drain(client)
    (oid,) = fake.orders
    fake.orders[oid] |= {"status": "partially_filled", "filled_qty": "2"}
    report = await client.query_order("C1")
    assert report == OrderStatusReport(client_order_id="C1", venue_order_id=oid,
                                       instrument_id="AAPL", side=1, quantity=5, filled=2,
                                       status="partially_filled", ts_ns=1704205800123456789)
    assert await client.query_order("nope") is None
    assert await client.open_orders() == [report]
    fake.positions = [{"symbol": "AAPL", "qty": "-7", "side": "short"},
                      {"symbol": "ZZZ", "qty": "1", "side": "long"}]
    assert await client.positions() == [PositionReport(instrument_id="AAPL", quantity=-7)]
    assert await client.account() == AccountReport(currency="USD", cash=Decimal("100000.25"),
                                                   equity=Decimal("100123.5"))


async def test_fills_since_reads_fill_activities_with_stream_consistent_ids(fake, client) -> None:
    client.submit(req("C1", qty=5))
    await drain(client)
    (oid,) = fake.orders
    order = fake.orders[oid]
    # the stream delivered the first execution; the second only shows in the activities
    await fake.push_update(order_update("partial_fill", order | {"filled_qty": "2"},
                                        execution_id="e-1", price="150.01", qty="2"))
    await client.rec.until(lambda: client.rec.named("on_fill"))
    fake.activities = [
        {"id": "20240102143001000::aaaa-1", "activity_type": "FILL", "type": "partial_fill",
         "transaction_time": "2024-01-02T14:30:01.0000005Z", "symbol": "AAPL", "side": "buy",
         "qty": "2", "price": "150.01", "cum_qty": "2", "leaves_qty": "3", "order_id": oid,
         "order_status": "partially_filled"},
        {"id": "20240102143002000::bbbb-2", "activity_type": "FILL", "type": "fill",
         "transaction_time": "2024-01-02T14:30:02Z", "symbol": "AAPL", "side": "buy",
         "qty": "3", "price": "150.02", "cum_qty": "5", "leaves_qty": "0", "order_id": oid,
         "order_status": "filled"}]
    fills = await client.fills_since(1704205800000000000)
    assert fills == [
        FillReport(exec_id="e-1", client_order_id="C1", instrument_id="AAPL", side=1,
                   quantity=2, price=15001, fee=Decimal(0), liquidity="",
                   ts_ns=1704205801000000500),
        FillReport(exec_id="bbbb-2", client_order_id="C1", instrument_id="AAPL", side=1,
                   quantity=3, price=15002, fee=Decimal(0), liquidity="",
                   ts_ns=1704205802000000000)]
    (query,) = [r[2] for r in fake.requests if r[1] == "/v2/account/activities"]
    assert query == {"activity_types": "FILL", "direction": "asc", "page_size": "100",
                     "after": "2024-01-02T14:29:59.000000000Z"}


async def test_fills_since_finds_the_client_id_of_an_order_it_never_placed(fake, client) -> None:
    fake.orders["ext-1"] = {"id": "ext-1", "client_order_id": "by-hand", "symbol": "MSFT"}
    fake.activities = [{"id": "x::cccc-3", "activity_type": "FILL", "symbol": "MSFT",
                        "side": "sell", "qty": "1", "price": "400", "cum_qty": "1",
                        "order_id": "ext-1", "transaction_time": "2024-01-02T15:00:00Z"}]
    (fill,) = await client.fills_since(0)
    assert (fill.client_order_id, fill.exec_id, fill.side, fill.price) == ("by-hand", "cccc-3",
                                                                           -1, 40000)


async def data_client(fake: FakeAlpaca) -> AlpacaDataClient:
    c = AlpacaDataClient(config(fake), INSTRUMENTS, sleep=Sleeps(), jitter=lambda: 1.0, env=ENV)
    await c.connect()
    c.subscribe("AAPL", ("trades", "quotes"))
    c.subscribe("MSFT", ("trades", "bars"))
    return c


async def test_data_client_yields_ticks_for_two_symbols(fake: FakeAlpaca) -> None:
    c = await data_client(fake)
    batches = []
    frames = [
        [{"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 150.01, "s": 100,
          "t": "2024-01-02T14:30:00.000000001Z", "c": ["@"], "z": "C"},
         {"T": "t", "S": "AAPL", "i": 2, "x": "V", "p": 150.02, "s": 5,
          "t": "2024-01-02T14:30:00.000000002Z", "c": ["@"], "z": "C"},
         {"T": "t", "S": "MSFT", "i": 3, "x": "V", "p": 400.5, "s": 10,
          "t": "2024-01-02T14:30:00.000000003Z", "c": ["@"], "z": "C"}],
        [{"T": "q", "S": "AAPL", "bx": "V", "bp": 150.0, "bs": 3, "ax": "V", "ap": 150.03,
          "as": 7, "t": "2024-01-02T14:30:00.5Z", "c": ["R"], "z": "C"},
         {"T": "t", "S": "AAPL", "p": 150.005, "s": 1, "t": "2024-01-02T14:30:00.6Z"},
         {"T": "b", "S": "MSFT", "o": 400, "h": 401, "l": 399, "c": 400.5, "v": 1000,
          "t": "2024-01-02T14:30:00Z", "n": 12, "vw": 400.2}]]

    async def read() -> None:
        async for batch in c.stream():
            batches.append(batch)
            if len(batches) == 3:
                return

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(5):
            await fake.data_subscribed.wait()
            assert fake.data_received == [{"action": "subscribe", "trades": ["AAPL", "MSFT"],
                                           "quotes": ["AAPL"], "bars": ["MSFT"]}]
            for frame in frames:
                await fake.data_ws[-1].send_bytes(orjson.dumps(frame))
            await reader
    finally:
        reader.cancel()
        await c.close()
    aapl, msft, quote = batches
    assert (aapl.instrument_id, aapl.kind) == ("AAPL", TickKind.TRADES)
    assert aapl.ts_ns.tolist() == [1704205800000000001, 1704205800000000002]
    assert aapl.price.tolist() == [15001, 15002] and aapl.size.tolist() == [100, 5]
    assert (msft.instrument_id, msft.price.tolist(), msft.size.tolist()) == ("MSFT", [40050],
                                                                            [10])
    assert (quote.instrument_id, quote.kind) == ("AAPL", TickKind.QUOTES)
    assert (quote.bid.tolist(), quote.ask.tolist(), quote.size.tolist()) == ([15000], [15003],
                                                                            [3])
    assert quote.ts_ns.dtype == np.int64 and quote.ts_ns.tolist() == [1704205800500000000]
    assert c.counters["refused"] == 1  # the sub-penny trade
    assert c.last_bar["MSFT"]["c"] == 400.5


async def test_data_client_reconnects_and_subscribes_again(fake: FakeAlpaca) -> None:
    c = await data_client(fake)
    got = []

    async def read() -> None:
        async for batch in c.stream():
            got.append(batch)
            return

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(5):
            await fake.data_subscribed.wait()
            fake.data_subscribed.clear()
            await fake.data_ws[-1].close()
            await fake.data_subscribed.wait()  # a new socket, authenticated and subscribed
            await fake.data_ws[-1].send_str(
                '[{"T":"t","S":"MSFT","p":"401","s":2,"t":"2024-01-02T14:31:00Z"}]')
            await reader
    finally:
        reader.cancel()
        await c.close()
    assert len(fake.data_ws) == 2 and len(fake.data_received) == 2
    assert got[0].price.tolist() == [40100] and c.counters["connects"] == 2
