"""`himari paper` reads the broker's positions at the end through the broker's rate limits and
server errors (found by tests/e2e/test_paper_faults.py: a 429 on that last read ended the session
with a runtime failure after a clean stop)."""

from __future__ import annotations

import aiohttp
import pytest

from himari.daemon.paper import broker_positions

from .conftest import KEY, SECRET

KEYS = {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
AUTH = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


async def faults(sb, body):
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.post(sb.base_url + "/admin/faults", json=body) as r:
            assert r.status == 200
            return await r.json()


async def test_positions_read_waits_out_429_and_5xx(sandbox) -> None:
    sandbox.exchange.state.positions.clear()
    await faults(sandbox, {"http_429": {"count": 2, "retry_after": 0},
                           "http_5xx": {"count": 1, "status": 502}})
    assert await broker_positions(sandbox.base_url, KEYS, max_wait_s=0.01) == {}
    left = await faults(sandbox, {})
    assert left["http_429"]["count"] == 0 and left["http_5xx"]["count"] == 0


async def test_positions_read_gives_up_after_its_attempts(sandbox) -> None:
    await faults(sandbox, {"http_5xx": {"count": 5, "status": 503}})
    with pytest.raises(aiohttp.ClientResponseError) as err:
        await broker_positions(sandbox.base_url, KEYS, attempts=3, max_wait_s=0.01)
    assert err.value.status == 503
    await faults(sandbox, {"http_5xx": {"count": 0}})
    assert isinstance(await broker_positions(sandbox.base_url, KEYS), dict)
