"""alpaca-py's TradingStream and StockDataStream against the sandbox's WebSockets.

The streams' own `run()` blocks in a fresh loop; here their async internals (`_run_forever`)
run as tasks on the test's loop (the sandbox's loop too), and are cancelled at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

from alpaca.data.live.stock import StockDataStream
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce, TradeEvent
from alpaca.trading.requests import MarketOrderRequest
from alpaca.trading.stream import TradingStream

KEY, SECRET = "PKTESTKEY", "test-secret-not-real"


@contextlib.asynccontextmanager
async def running(stream):
    task = asyncio.create_task(stream._run_forever())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stream.close()


async def test_trading_stream_gets_new_then_fill(sandbox, wait_until) -> None:
    updates = []

    async def on_update(u) -> None:
        updates.append(u)

    stream = TradingStream(KEY, SECRET, paper=True, url_override=sandbox.stream_url)
    stream.subscribe_trade_updates(on_update)
    async with running(stream):
        await wait_until(lambda: sandbox.trades.clients, what="the stream to listen")
        tc = TradingClient(KEY, SECRET, paper=True, url_override=sandbox.base_url)
        order = await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
            symbol="AAPL", qty=4, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
            client_order_id="s-1"))
        await wait_until(lambda: any(u.event == TradeEvent.FILL for u in updates), what="fill")
    events = [u.event for u in updates]
    assert events == [TradeEvent.NEW, TradeEvent.FILL]
    new, fill = updates
    assert new.order.id == order.id and new.order.client_order_id == "s-1"
    assert fill.order.id == order.id and fill.order.status.value == "filled"
    assert fill.qty == 4 and fill.position_qty == 4 and fill.price > 0
    assert fill.execution_id is not None
    assert Decimal(fill.order.filled_avg_price) == Decimal(str(fill.price))
    booked = sandbox.exchange.state.fills
    assert [str(fill.execution_id)] == [f.execution_id for f in booked]


async def test_trading_stream_with_wrong_keys_is_not_authorized(sandbox, wait_until) -> None:
    stream = TradingStream(KEY, "wrong", paper=True, url_override=sandbox.stream_url)
    await stream._connect()
    try:
        try:
            await stream._auth()
        except ValueError as exc:
            assert "failed to authenticate" in str(exc)
        else:
            raise AssertionError("authorized with a wrong secret")
    finally:
        await stream.close()
    assert not sandbox.trades.clients


async def test_stock_data_stream_trades_and_quotes_for_two_symbols(sandbox, wait_until) -> None:
    trades, quotes = [], []

    async def on_trade(t) -> None:
        trades.append(t)

    async def on_quote(q) -> None:
        quotes.append(q)

    stream = StockDataStream(KEY, SECRET, url_override=sandbox.data_url("iex"))
    stream.subscribe_trades(on_trade, "AAPL", "MSFT")
    stream.subscribe_quotes(on_quote, "AAPL")
    async with running(stream):
        await wait_until(lambda: {t.symbol for t in trades} == {"AAPL", "MSFT"} and quotes,
                         what="trades of both symbols and AAPL quotes")
    assert all(t.price > 0 and t.size >= 1 for t in trades)
    assert {q.symbol for q in quotes} == {"AAPL"}
    assert all(0 < q.bid_price < q.ask_price for q in quotes)
    for sym in ("AAPL", "MSFT"):  # each symbol's trades are in time order
        times = [t.timestamp for t in trades if t.symbol == sym]
        assert times == sorted(times)


async def test_stock_data_stream_with_wrong_keys_gets_auth_failed(sandbox) -> None:
    stream = StockDataStream(KEY, "wrong", url_override=sandbox.data_url("sip"))
    await stream._connect()
    try:
        try:
            await stream._auth()
        except ValueError as exc:
            assert "auth failed" in str(exc)
        else:
            raise AssertionError("authenticated with a wrong secret")
    finally:
        await stream.close()


async def test_trading_stream_reconnects_after_drop_ws_and_gets_updates(sandbox,
                                                                        wait_until) -> None:
    import aiohttp

    updates = []

    async def on_update(u) -> None:
        updates.append(u)

    stream = TradingStream(KEY, SECRET, paper=True, url_override=sandbox.stream_url)
    stream._reconnect_min_backoff = 0.05  # the SDK's backoff, shortened for the test
    stream.subscribe_trade_updates(on_update)
    async with running(stream):
        await wait_until(lambda: sandbox.trades.clients, what="the stream to listen")
        first = set(sandbox.trades.clients)
        async with aiohttp.ClientSession() as http:
            async with http.post(sandbox.base_url + "/admin/faults", json={"drop_ws": True},
                                 headers={"APCA-API-KEY-ID": KEY,
                                          "APCA-API-SECRET-KEY": SECRET}) as r:
                assert r.status == 200
        await wait_until(lambda: sandbox.trades.clients and not first & sandbox.trades.clients,
                         what="the SDK to reconnect and listen again")
        tc = TradingClient(KEY, SECRET, paper=True, url_override=sandbox.base_url)
        await asyncio.to_thread(tc.submit_order, MarketOrderRequest(
            symbol="MSFT", qty=1, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
        await wait_until(lambda: any(u.event == TradeEvent.FILL for u in updates), what="fill")
    assert [u.event for u in updates] == [TradeEvent.NEW, TradeEvent.FILL]
    assert updates[1].position_qty == -1  # a short: the sandbox allows it, like Alpaca's paper
