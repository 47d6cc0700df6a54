"""The sandbox keeps its account across a restart, and injects faults on command."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import orjson
import pytest

from himari.brokers.sandbox.config import SandboxConfig
from himari.brokers.sandbox.server import Sandbox

KEY, SECRET = "PKTESTKEY", "test-secret-not-real"
AUTH = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
FAST = dict(speed=100.0, ticks_per_day=500_000.0)


async def post(http, sb, path, body, headers=AUTH):
    async with http.post(sb.base_url + path, json=body, headers=headers) as r:
        return r.status, await r.json(), dict(r.headers)


async def get(http, sb, path, headers=AUTH):
    async with http.get(sb.base_url + path, headers=headers) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


async def trade_socket(http, sb, short_auth=False):
    """A raw client of the trade_updates stream, authenticated and listening."""
    ws = await http.ws_connect(sb.stream_url)
    auth = ({"action": "auth", "key": KEY, "secret": SECRET} if short_auth else
            {"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}})
    await ws.send_str(orjson.dumps(auth).decode())
    auth = await asyncio.wait_for(ws.receive(), 5)
    assert orjson.loads(auth.data)["data"]["status"] == "authorized"
    await ws.send_str('{"action": "listen", "data": {"streams": ["trade_updates"]}}')
    listening = await asyncio.wait_for(ws.receive(), 5)
    assert orjson.loads(listening.data) == {"stream": "listening",
                                            "data": {"streams": ["trade_updates"]}}
    return ws


async def test_state_survives_a_restart(tmp_path, wait_until) -> None:
    cfg = SandboxConfig(symbols=["AAPL", "MSFT"], state_path=str(tmp_path / "acct.json"), **FAST)
    async with aiohttp.ClientSession() as http:
        async with Sandbox(cfg, KEY, SECRET) as sb:
            status, filled, _ = await post(http, sb, "/v2/orders", {
                "symbol": "AAPL", "qty": "7", "side": "buy", "type": "market",
                "time_in_force": "gtc", "client_order_id": "r-1"})
            assert status == 200
            await wait_until(lambda: sb.exchange.state.orders[filled["id"]].status == "filled")
            status, resting, _ = await post(http, sb, "/v2/orders", {
                "symbol": "MSFT", "qty": "2", "side": "buy", "type": "limit",
                "limit_price": "1.00", "time_in_force": "gtc", "client_order_id": "r-2"})
            assert status == 200
            before = {p: (await get(http, sb, p))[1] for p in
                      ("/v2/positions", "/v2/orders?status=all", "/v2/account")}
            fills = list(sb.exchange.state.fills)
        async with Sandbox(cfg, KEY, SECRET) as sb2:
            after = {p: (await get(http, sb2, p))[1] for p in before}
            assert sb2.exchange.state.fills == fills
            assert after["/v2/orders?status=all"] == before["/v2/orders?status=all"]
            assert after["/v2/account"]["cash"] == before["/v2/account"]["cash"]
            assert after["/v2/account"]["id"] == before["/v2/account"]["id"]
            assert [(p["symbol"], p["qty"], p["avg_entry_price"]) for p in after["/v2/positions"]] \
                == [(p["symbol"], p["qty"], p["avg_entry_price"]) for p in before["/v2/positions"]]
            # the resting limit is working again on the restarted book: it can be cancelled
            assert sb2.exchange.engine.get("r-2") is not None
            async with http.delete(f"{sb2.base_url}/v2/orders/{resting['id']}",
                                   headers=AUTH) as r:
                assert r.status == 204
            # a client order id used before the restart is still taken
            status, err, _ = await post(http, sb2, "/v2/orders", {
                "symbol": "AAPL", "qty": "1", "side": "sell", "type": "market",
                "time_in_force": "day", "client_order_id": "r-1"})
            assert status == 422 and err["code"] == 40010001
        async with Sandbox(cfg, KEY, SECRET) as sb3:
            _, order, _ = await get(http, sb3, "/v2/orders:by_client_order_id?client_order_id=r-2")
            assert order["status"] == "canceled"


async def test_http_429_with_retry_after_then_recovers(sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        status, faults, _ = await post(http, sandbox, "/admin/faults",
                                       {"http_429": {"count": 2, "retry_after": 7}})
        assert status == 200 and faults["http_429"] == {"count": 2, "retry_after": 7}
        for _ in range(2):
            status, body, headers = await get(http, sandbox, "/v2/account")
            assert status == 429 and headers["Retry-After"] == "7"
            assert set(body) == {"code", "message"} and "rate limit" in body["message"]
        status, body, _ = await get(http, sandbox, "/v2/account")
        assert status == 200 and body["status"] == "ACTIVE"


async def test_http_5xx_fault(sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        await post(http, sandbox, "/admin/faults", {"http_5xx": {"count": 1, "status": 502}})
        status, body, _ = await get(http, sandbox, "/v2/clock")
        assert status == 502 and "code" in body
        assert (await get(http, sandbox, "/v2/clock"))[0] == 200


async def test_unknown_fault_or_bad_value_is_refused_by_name(sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        status, body, _ = await post(http, sandbox, "/admin/faults", {"explode": True})
        assert status == 422 and "explode" in body["message"]
        status, body, _ = await post(http, sandbox, "/admin/faults", {"duplicate": -1})
        assert status == 422 and "duplicate" in body["message"]
        status, _, _ = await post(http, sandbox, "/admin/faults", {"duplicate": 1},
                                  headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": "x"})
        assert status == 401
        assert (await get(http, sandbox, "/admin/faults"))[1]["duplicate"] == 0


async def test_drop_ws_closes_every_socket(sandbox, wait_until) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await trade_socket(http, sandbox)
        data = await http.ws_connect(sandbox.data_url())
        assert orjson.loads((await asyncio.wait_for(data.receive(), 5)).data) == [
            {"T": "success", "msg": "connected"}]
        status, _, _ = await post(http, sandbox, "/admin/faults", {"drop_ws": True})
        assert status == 200
        for sock in (ws, data):
            msg = await asyncio.wait_for(sock.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await wait_until(lambda: not sandbox.trades.sockets and not sandbox.data.sockets)


async def test_duplicate_fault_sends_a_trade_update_twice(sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await trade_socket(http, sandbox)
        await post(http, sandbox, "/admin/faults", {"duplicate": 1})
        status, order, _ = await post(http, sandbox, "/v2/orders", {
            "symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "1",
            "time_in_force": "gtc", "client_order_id": "d-1"})
        assert status == 200
        first = await asyncio.wait_for(ws.receive(), 5)
        second = await asyncio.wait_for(ws.receive(), 5)
        assert first.type == aiohttp.WSMsgType.BINARY  # Alpaca's paper stream sends binary frames
        assert first.data == second.data
        assert orjson.loads(first.data)["data"]["event"] == "new"
        async with http.delete(f"{sandbox.base_url}/v2/orders/{order['id']}", headers=AUTH):
            pass
        third = orjson.loads((await asyncio.wait_for(ws.receive(), 5)).data)
        assert third["data"]["event"] == "canceled"  # only one duplicate was asked for
        await ws.close()


async def test_reorder_fault_swaps_two_updates(sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await trade_socket(http, sandbox, short_auth=True)
        await post(http, sandbox, "/admin/faults", {"reorder": 1})
        _, order, _ = await post(http, sandbox, "/v2/orders", {
            "symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "1",
            "time_in_force": "gtc"})
        async with http.delete(f"{sandbox.base_url}/v2/orders/{order['id']}", headers=AUTH):
            pass
        got = [orjson.loads((await asyncio.wait_for(ws.receive(), 5)).data)["data"]["event"]
               for _ in range(2)]
        assert got == ["canceled", "new"]
        await ws.close()


async def test_never_confirm_and_partial_fills(sandbox, wait_until) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await trade_socket(http, sandbox)
        await post(http, sandbox, "/admin/faults", {"never_confirm": True, "partial_fills": 3})
        status, order, _ = await post(http, sandbox, "/v2/orders", {
            "symbol": "MSFT", "qty": "10", "side": "buy", "type": "market",
            "time_in_force": "day"})
        assert status == 200
        events = []
        while not events or events[-1]["event"] != "fill":
            msg = await asyncio.wait_for(ws.receive(), 5)
            events.append(orjson.loads(msg.data)["data"])
        assert [e["event"] for e in events] == ["partial_fill", "partial_fill", "fill"]
        assert [e["qty"] for e in events] == ["4", "3", "3"]
        assert [e["position_qty"] for e in events] == ["4", "7", "10"]
        assert len({e["execution_id"] for e in events}) == 3
        assert sum(Decimal(e["qty"]) for e in events) == 10
        await ws.close()


async def test_market_data_json_mode_bars_agree_with_trades(sandbox, wait_until) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(sandbox.data_url("iex"))
        assert orjson.loads((await ws.receive()).data)[0]["msg"] == "connected"
        await ws.send_str(orjson.dumps({"action": "subscribe", "trades": ["AAPL"]}).decode())
        assert orjson.loads((await ws.receive()).data) == [
            {"T": "error", "code": 401, "msg": "not authenticated"}]
        await ws.send_str(orjson.dumps({"action": "auth", "key": KEY, "secret": SECRET}).decode())
        assert orjson.loads((await ws.receive()).data) == [{"T": "success",
                                                            "msg": "authenticated"}]
        await ws.send_str(orjson.dumps({"action": "subscribe", "trades": ["AAPL"],
                                        "bars": ["AAPL"]}).decode())
        sub = orjson.loads((await ws.receive()).data)[0]
        assert sub["T"] == "subscription" and sub["trades"] == ["AAPL"] and sub["bars"] == ["AAPL"]
        trades, bars = [], []

        async def read() -> None:
            while len(bars) < 2:  # the first bar may be partial: check the second
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT  # JSON unless msgpack was asked for
                for m in orjson.loads(msg.data):
                    (bars if m["T"] == "b" else trades).append(m)
        await asyncio.wait_for(read(), 10)
        bar = bars[1]
        start = bar["t"][:16]  # the bar's minute, "YYYY-MM-DDTHH:MM"
        inside = [t for t in trades if t["t"][:16] == start]
        assert inside and bar["o"] == inside[0]["p"] and bar["c"] == inside[-1]["p"]
        assert bar["h"] == max(t["p"] for t in inside) and bar["l"] == min(t["p"] for t in inside)
        assert bar["v"] == sum(t["s"] for t in inside) and bar["n"] == len(inside)
        await ws.close()


@pytest.mark.parametrize("body", [{"symbol": "AAPL"}, ["not", "an", "object"]])
async def test_malformed_order_bodies_are_422(sandbox, body) -> None:
    async with aiohttp.ClientSession() as http:
        status, err, _ = await post(http, sandbox, "/v2/orders", body)
        assert status == 422 and set(err) == {"code", "message"}


async def test_delay_ms_fault_holds_trade_updates_back(sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await trade_socket(http, sandbox)
        await post(http, sandbox, "/admin/faults", {"delay_ms": 300})
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await post(http, sandbox, "/v2/orders", {
            "symbol": "AAPL", "qty": "1", "side": "buy", "type": "limit", "limit_price": "1",
            "time_in_force": "gtc"})
        msg = await asyncio.wait_for(ws.receive(), 5)
        # a lower bound only: a delay can make it later, never earlier
        assert loop.time() - sent >= 0.3
        assert orjson.loads(msg.data)["data"]["event"] == "new"
        await ws.close()
