"""Jittered exponential backoff for reconnects and retries; sleep and jitter are injectable so
tests never wait."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[object]]


class Backoff:
    """Delay n (from 0) is `min(max_s, initial_s * 2**n) * jitter()`; `reset` after a success."""

    def __init__(self, initial_s: float, max_s: float, *, sleep: Sleep = asyncio.sleep,
                 jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0)) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.sleep, self.jitter = sleep, jitter
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 60)) * self.jitter()
        self.attempt += 1
        return delay

    async def wait(self) -> None:
        await self.sleep(self.next_delay())

    def reset(self) -> None:
        self.attempt = 0
