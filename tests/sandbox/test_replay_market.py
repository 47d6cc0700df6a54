"""The sandbox replaying data files (`replay_paths`) instead of the synthetic stream."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import orjson

from himari.brokers.sandbox.config import SandboxConfig
from himari.brokers.sandbox.market import QUIET_NS
from himari.brokers.sandbox.server import Sandbox

KEY, SECRET = "PKTESTKEY", "test-secret-not-real"
AUTH = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
N = 200


def write(path, base: str, step: str) -> list[Decimal]:
    prices = [Decimal(base) + i * Decimal(step) for i in range(N)]
    rows = [f"{1_700_000_000 + i},{p},{1 + i % 3}" for i, p in enumerate(prices)]
    path.write_text("ts,price,size\n" + "\n".join(rows) + "\n")
    return prices


async def test_replayed_files_are_the_market_then_it_goes_quiet(tmp_path, wait_until) -> None:
    spy = write(tmp_path / "a.csv", "400.00", "0.01")
    qqq = write(tmp_path / "b.csv", "350.00", "-0.01")
    cfg = SandboxConfig(replay_paths=[f"spy={tmp_path / 'a.csv'}", f"QQQ={tmp_path / 'b.csv'}"],
                        speed=100.0)
    async with Sandbox(cfg, KEY, SECRET) as sb, aiohttp.ClientSession() as http:
        now = [sb.exchange.clock.now_ns()]  # the market waits (frozen clock) until we are ready
        sb.exchange.clock.now_ns = lambda: now[0]
        assert sorted(sb.exchange.instruments) == ["QQQ", "SPY"]
        ws = await http.ws_connect(sb.data_url())
        await ws.receive()
        await ws.send_str(orjson.dumps({"action": "auth", "key": KEY, "secret": SECRET}).decode())
        await ws.receive()
        await ws.send_str(orjson.dumps({"action": "subscribe", "trades": ["*"]}).decode())
        await ws.receive()
        async with http.post(sb.base_url + "/v2/orders", headers=AUTH, json={
                "symbol": "SPY", "qty": "2", "side": "buy", "type": "market",
                "time_in_force": "gtc"}) as r:
            order = await r.json()
        seen: dict[str, list[Decimal]] = {"SPY": [], "QQQ": []}
        now[0] += 1000 * 1_000_000_000  # the whole file's time passes

        await wait_until(lambda: sb.exchange.market.next_ts() == QUIET_NS, what="end of data")
        # every tick is queued to the socket by now; a subscription reply queues after them
        await ws.send_str(orjson.dumps({"action": "subscribe", "trades": ["*"]}).decode())

        async def read() -> None:
            while True:
                msg = await ws.receive()
                for m in orjson.loads(msg.data):
                    if m["T"] == "subscription":
                        return
                    seen[m["S"]].append(Decimal(str(m["p"])))
        await asyncio.wait_for(read(), 10)
        # the files' prices in order (the first few may have gone out before the socket was on)
        for sym, prices in (("SPY", spy), ("QQQ", qqq)):
            got = seen[sym]
            assert len(got) >= N - 20 and got == prices[len(prices) - len(got):]
        filled = sb.exchange.state.orders[order["id"]]
        assert filled.status == "filled"
        assert sb.exchange.instruments["SPY"].ticks_to_price(filled.filled_value // 2) in spy
        # the data has ended: a new market order waits (nothing trades any more)
        async with http.post(sb.base_url + "/v2/orders", headers=AUTH, json={
                "symbol": "QQQ", "qty": "1", "side": "buy", "type": "market",
                "time_in_force": "gtc"}) as r:
            late = await r.json()
        sb.exchange.step()
        assert sb.exchange.state.orders[late["id"]].status == "new"
        await ws.close()
