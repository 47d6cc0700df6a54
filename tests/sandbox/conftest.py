"""Helpers for the broker sandbox tests: a sandbox on an ephemeral loopback port, and a bounded
wait for a condition (never a bare sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from himari.brokers.sandbox.config import SandboxConfig
from himari.brokers.sandbox.server import Sandbox

KEY, SECRET = "PKTESTKEY", "test-secret-not-real"
# ~580 ticks a second per symbol: market orders fill within milliseconds
FAST = dict(speed=100.0, ticks_per_day=500_000.0)


async def until(pred: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Wait until pred() is true, failing after `timeout` seconds."""
    async def poll() -> None:
        while not pred():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}") from None


@pytest.fixture
def cfg() -> SandboxConfig:
    return SandboxConfig(symbols=["AAPL", "MSFT"], **FAST)


@pytest.fixture
async def sandbox(cfg: SandboxConfig) -> AsyncIterator[Sandbox]:
    async with Sandbox(cfg, KEY, SECRET) as sb:
        yield sb


@pytest.fixture
def wait_until() -> Callable[..., object]:
    return until
