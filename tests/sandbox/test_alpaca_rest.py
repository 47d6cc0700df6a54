"""alpaca-py's TradingClient against the sandbox: the REST subset a trading daemon uses.

The SDK is synchronous (requests), so its calls run in a thread while the sandbox serves on the
test's event loop.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

KEY, SECRET = "PKTESTKEY", "test-secret-not-real"


def client(sb, key: str = KEY, secret: str = SECRET) -> TradingClient:
    return TradingClient(key, secret, paper=True, url_override=sb.base_url)


async def call(fn, *args):
    return await asyncio.to_thread(fn, *args)


async def test_account_clock_and_assets(sandbox) -> None:
    tc = client(sandbox)
    acct = await call(tc.get_account)
    assert acct.status.value == "ACTIVE" and Decimal(acct.cash) == Decimal("100000")
    assert Decimal(acct.equity) == Decimal("100000")
    clock = await call(tc.get_clock)
    assert clock.is_open and clock.next_close > clock.timestamp
    assets = await call(tc.get_all_assets)
    assert sorted(a.symbol for a in assets) == ["AAPL", "MSFT"]
    aapl = await call(tc.get_asset, "AAPL")
    assert aapl.tradable and aapl.price_increment == pytest.approx(0.01)


async def test_wrong_or_missing_keys_are_refused_with_alpacas_error_shape(sandbox) -> None:
    for tc in (client(sandbox, secret="wrong"), client(sandbox, key="PKOTHER")):
        with pytest.raises(APIError) as err:
            await call(tc.get_account)
        assert err.value.status_code == 401
        assert err.value.code == 40110000 and "not authorized" in err.value.message


async def test_market_order_fills_and_opens_a_position(sandbox, wait_until) -> None:
    tc = client(sandbox)
    req = MarketOrderRequest(symbol="AAPL", qty=5, side=OrderSide.BUY,
                             time_in_force=TimeInForce.DAY, client_order_id="m-1")
    order = await call(tc.submit_order, req)
    assert order.client_order_id == "m-1" and order.symbol == "AAPL"
    assert order.status in (OrderStatus.ACCEPTED, OrderStatus.NEW)
    ex = sandbox.exchange
    await wait_until(lambda: ex.state.orders[str(order.id)].status == "filled", what="the fill")
    got = await call(tc.get_order_by_client_id, "m-1")
    assert got.id == order.id and got.status == OrderStatus.FILLED
    assert Decimal(got.filled_qty) == 5 and Decimal(got.filled_avg_price) > 0
    same = await call(tc.get_order_by_id, order.id)
    assert same.status == OrderStatus.FILLED
    positions = await call(tc.get_all_positions)
    assert [(p.symbol, Decimal(p.qty), p.side.value) for p in positions] == [("AAPL", 5, "long")]
    pos = await call(tc.get_open_position, "AAPL")
    assert Decimal(pos.avg_entry_price) == Decimal(got.filled_avg_price)
    # cash paid exactly qty * price (no fees configured)
    acct = await call(tc.get_account)
    assert Decimal(acct.cash) == Decimal("100000") - 5 * Decimal(got.filled_avg_price)
    with pytest.raises(APIError) as err:
        await call(tc.get_open_position, "MSFT")
    assert err.value.status_code == 404


async def test_limit_order_rests_is_listed_and_cancelled(sandbox, wait_until) -> None:
    tc = client(sandbox)
    req = LimitOrderRequest(symbol="MSFT", qty=3, side=OrderSide.BUY, limit_price=1.00,
                            time_in_force=TimeInForce.GTC, client_order_id="l-1")
    order = await call(tc.submit_order, req)
    assert Decimal(order.limit_price) == Decimal("1") and order.time_in_force == TimeInForce.GTC
    open_orders = await call(tc.get_orders, GetOrdersRequest(status=QueryOrderStatus.OPEN))
    assert [o.client_order_id for o in open_orders] == ["l-1"]
    await call(tc.cancel_order_by_id, order.id)
    got = await call(tc.get_order_by_client_id, "l-1")
    assert got.status == OrderStatus.CANCELED and got.canceled_at is not None
    assert await call(tc.get_orders, GetOrdersRequest(status=QueryOrderStatus.OPEN)) == []
    closed = await call(tc.get_orders, GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert [o.client_order_id for o in closed] == ["l-1"]
    with pytest.raises(APIError) as err:  # a second cancel: not cancelable any more
        await call(tc.cancel_order_by_id, order.id)
    assert err.value.status_code == 422


async def test_duplicate_client_order_id_is_422(sandbox) -> None:
    tc = client(sandbox)
    req = LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, limit_price=1.00,
                            time_in_force=TimeInForce.DAY, client_order_id="dup")
    await call(tc.submit_order, req)
    with pytest.raises(APIError) as err:
        await call(tc.submit_order, req)
    assert err.value.status_code == 422 and "client_order_id must be unique" in err.value.message
    assert len(sandbox.exchange.state.orders) == 1


async def test_bad_orders_name_the_field(sandbox) -> None:
    tc = client(sandbox)
    cases = [
        (MarketOrderRequest(symbol="ZZZZ", qty=1, side=OrderSide.BUY,
                            time_in_force=TimeInForce.DAY), "ZZZZ"),
        (LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, limit_price=1.005,
                           time_in_force=TimeInForce.DAY), "limit_price"),
        (MarketOrderRequest(symbol="AAPL", qty=1.5, side=OrderSide.BUY,
                            time_in_force=TimeInForce.DAY), "qty"),
        (MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY,
                            time_in_force=TimeInForce.FOK), "time_in_force"),
        (MarketOrderRequest(symbol="AAPL", qty=10_000, side=OrderSide.BUY,
                            time_in_force=TimeInForce.DAY), "buying power"),
    ]
    for req, word in cases:
        with pytest.raises(APIError) as err:
            await call(tc.submit_order, req)
        assert err.value.status_code in (403, 422) and word in err.value.message
    assert sandbox.exchange.state.orders == {}


async def test_order_queries_and_cancel_all(sandbox) -> None:
    tc = client(sandbox)
    for i in range(2):
        await call(tc.submit_order, LimitOrderRequest(
            symbol="AAPL", qty=1, side=OrderSide.SELL, limit_price=100_000,
            time_in_force=TimeInForce.GTC, client_order_id=f"c-{i}"))
    def ids(orders):
        return [o.client_order_id for o in orders]

    everything = QueryOrderStatus.ALL
    first, second = ids(await call(tc.get_orders, GetOrdersRequest(status=everything,
                                                                   direction="asc")))
    assert (first, second) == ("c-0", "c-1")
    assert ids(await call(tc.get_orders, GetOrdersRequest(status=everything, limit=1))) == ["c-1"]
    c0 = await call(tc.get_order_by_client_id, "c-0")
    assert ids(await call(tc.get_orders, GetOrdersRequest(status=everything,
                                                          after=c0.submitted_at))) == ["c-1"]
    assert ids(await call(tc.get_orders, GetOrdersRequest(status=everything,
                                                          until=c0.submitted_at))) == ["c-0"]
    assert ids(await call(tc.get_orders, GetOrdersRequest(status=everything,
                                                          symbols=["MSFT"]))) == []
    out = await call(tc.cancel_orders)
    assert sorted(r.status for r in out) == [200, 200]
    statuses = {o.client_order_id: o.status for o in await call(
        tc.get_orders, GetOrdersRequest(status=QueryOrderStatus.ALL))}
    assert statuses == {"c-0": OrderStatus.CANCELED, "c-1": OrderStatus.CANCELED}


async def test_fill_activities_list_every_execution_with_its_id(sandbox, wait_until) -> None:
    """GET /v2/account/activities?activity_types=FILL: what a daemon reads to book fills it
    missed; each activity's id ends with the booked execution id, cum_qty adds up."""
    import aiohttp

    ex = sandbox.exchange
    headers = {"APCA-API-KEY-ID": "PKTESTKEY", "APCA-API-SECRET-KEY": "test-secret-not-real"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for i, side in enumerate(("buy", "buy", "sell")):
            body = {"symbol": "AAPL", "qty": "2", "side": side, "type": "market",
                    "time_in_force": "day", "client_order_id": f"act-{i}"}
            async with http.post(f"{sandbox.base_url}/v2/orders", json=body) as r:
                assert r.status == 200
        await wait_until(lambda: len(ex.state.fills) >= 3, what="three fills")
        async with http.get(f"{sandbox.base_url}/v2/account/activities",
                            params={"activity_types": "FILL", "direction": "asc",
                                    "page_size": "2"}) as r:
            first = await r.json()
        async with http.get(f"{sandbox.base_url}/v2/account/activities",
                            params={"activity_types": "FILL", "direction": "asc",
                                    "page_token": first[-1]["id"]}) as r:
            rest = await r.json()
    acts = first + rest
    assert len(first) == 2 and len(acts) == len(ex.state.fills)
    assert [a["id"].rsplit("::", 1)[1] for a in acts] == [f.execution_id for f in ex.state.fills]
    assert all(a["activity_type"] == "FILL" and a["symbol"] == "AAPL" for a in acts)
    assert [a["side"] for a in acts] == ["buy", "buy", "sell"]
    assert all(a["cum_qty"] == "2" and a["leaves_qty"] == "0" and a["type"] == "fill"
               for a in acts)
