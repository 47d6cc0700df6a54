"""FILL account activities (`GET /v2/account/activities`), which the Alpaca adapter reads to
reconcile after a reconnect: one per execution, named by the stream's execution id, oldest first
with `direction=asc`, paged by `page_token`, filtered by `after`."""

from __future__ import annotations

from decimal import Decimal

import aiohttp

KEY, SECRET = "PKTESTKEY", "test-secret-not-real"
AUTH = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


async def test_fill_activities_name_the_executions_and_page(sandbox, wait_until) -> None:
    ex = sandbox.exchange
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async def get(path, **params):
            async with http.get(sandbox.base_url + path, params=params) as r:
                assert r.status == 200, await r.text()
                return await r.json()

        assert await get("/v2/account/activities", activity_types="FILL") == []
        async with http.post(sandbox.base_url + "/admin/faults", json={"partial_fills": 3}) as r:
            assert r.status == 200
        async with http.post(sandbox.base_url + "/v2/orders", json={
                "symbol": "MSFT", "qty": "10", "side": "buy", "type": "market",
                "time_in_force": "day"}) as r:
            order = await r.json()
        await wait_until(lambda: ex.state.orders[order["id"]].status == "filled", what="fill")

        acts = await get("/v2/account/activities", activity_types="FILL", direction="asc")
        assert [a["id"].split("::")[1] for a in acts] == [f.execution_id for f in ex.state.fills]
        assert [a["qty"] for a in acts] == ["4", "3", "3"]
        assert [a["cum_qty"] for a in acts] == ["4", "7", "10"]
        assert [a["type"] for a in acts] == ["partial_fill", "partial_fill", "fill"]
        assert {a["order_id"] for a in acts} == {order["id"]}
        assert all(a["side"] == "buy" and a["symbol"] == "MSFT" and Decimal(a["price"]) > 0
                   for a in acts)
        assert await get("/v2/account/activities/FILL", direction="asc") == acts
        assert await get("/v2/account/activities") == acts[::-1]  # newest first by default
        assert await get("/v2/account/activities", activity_types="DIV") == []

        page1 = await get("/v2/account/activities", direction="asc", page_size="2")
        page2 = await get("/v2/account/activities", direction="asc", page_size="2",
                          page_token=page1[-1]["id"])
        assert page1 + page2 == acts
        last = acts[-1]["transaction_time"]
        assert await get("/v2/account/activities", direction="asc", after=last) == []
