"""GET /v2/account/activities?activity_types=FILL: the sandbox's executions as Alpaca's FILL
activities, which the daemon's reconciliation on restart reads (`fills_since`). Each id ends in
the execution id the trade_updates stream gave, and pages follow Alpaca's parameters."""

from __future__ import annotations

from decimal import Decimal

import aiohttp

from .conftest import KEY, SECRET

HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


async def get(sb, path: str, **params: str):
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        async with http.get(sb.base_url + path, params=params) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def submit(sb, symbol: str, side: str, qty: int, coid: str) -> dict:
    body = {"symbol": symbol, "side": side, "qty": str(qty), "type": "market",
            "time_in_force": "day", "client_order_id": coid}
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        async with http.post(sb.base_url + "/v2/orders", json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()



async def test_fill_activities_name_the_stream_execution_ids_and_page(sandbox, wait_until):
    ex = sandbox.exchange
    sandbox.faults.partial_fills = 2  # each order fills in two executions: cum_qty grows
    orders = [await submit(sandbox, "AAPL", "buy", 4, "a-1"),
              await submit(sandbox, "MSFT", "sell", 2, "a-2")]
    await wait_until(lambda: all(ex.state.orders[o["id"]].status == "filled" for o in orders),
                     what="both orders filled")
    fills = list(ex.state.fills)
    assert len(fills) == 4
    acts = await get(sandbox, "/v2/account/activities", activity_types="FILL", direction="asc")
    assert [a["id"].rsplit("::", 1)[-1] for a in acts] == [f.execution_id for f in fills]
    by_order: dict[str, list[dict]] = {}
    for a in acts:
        assert a["activity_type"] == "FILL" and Decimal(a["price"]) > 0
        by_order.setdefault(a["order_id"], []).append(a)
    first, second = by_order[orders[0]["id"]]
    assert (first["type"], first["cum_qty"], first["leaves_qty"]) == ("partial_fill", "2", "2")
    assert (second["type"], second["cum_qty"], second["leaves_qty"]) == ("fill", "4", "0")
    assert second["order_status"] == "filled" and second["side"] == "buy"
    assert [a["side"] for a in by_order[orders[1]["id"]]] == ["sell", "sell"]

    # pages: page_token is the last id seen; desc is the default order
    page1 = await get(sandbox, "/v2/account/activities", activity_types="FILL",
                      direction="asc", page_size="3")
    page2 = await get(sandbox, "/v2/account/activities", activity_types="FILL",
                      direction="asc", page_size="3", page_token=page1[-1]["id"])
    assert page1 + page2 == acts and len(page2) == 1
    assert await get(sandbox, "/v2/account/activities") == acts[::-1]
    # after: strictly later executions only; another activity type: none
    after = await get(sandbox, "/v2/account/activities", direction="asc",
                      after=acts[1]["transaction_time"])
    assert after == [a for a in acts if a["transaction_time"] > acts[1]["transaction_time"]]
    assert await get(sandbox, "/v2/account/activities", activity_types="DIV") == []
