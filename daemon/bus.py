"""The in-memory event bus.

Hot path: handlers subscribed with `subscribe` run synchronously inside `publish`, in ascending
`order` (ties in subscription order). An event published from inside a handler is dispatched at once
(depth first), so an order placed on a bar close reaches the venue before the next tick is looked at.

Slow path: `subscribe_queue` gives a consumer a bounded queue. `publish` only enqueues (never awaits);
when the queue is full the overflow policy decides what is lost and a counter says how much.

A handler that raises is contained: the error is logged with the event id and counted per handler,
and the remaining handlers still run.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from himari.daemon.stagetimer import StageTimer

log = structlog.get_logger("himari.bus")

Handler = Callable[[Any], None]

OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")


@dataclass(order=True)
class _Subscription:
    order: int
    seq: int
    name: str = field(compare=False)
    handler: Handler = field(compare=False)


class SlowQueue:
    """A bounded queue for a slow consumer with an explicit overflow policy and counters.

    `offer` never blocks and costs a deque append: it runs on the hot path for every event a slow
    consumer wants. The consumer (one owned task) awaits `get`. Policies when full: drop_oldest
    (keep the newest events) or drop_newest (keep what is queued); either way `dropped` counts."""

    def __init__(self, name: str, maxsize: int, policy: str = "drop_oldest") -> None:
        if maxsize <= 0:
            raise ValueError(f"queue {name}: maxsize = {maxsize} must be > 0")
        if policy not in OVERFLOW_POLICIES:
            raise ValueError(f"queue {name}: policy = {policy!r}, allowed {OVERFLOW_POLICIES}")
        self.name = name
        self.policy = policy
        self.maxsize = maxsize
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.enqueued = 0
        self.dropped = 0

    def offer(self, event: Any) -> None:
        items = self._items
        if len(items) >= self.maxsize:
            self.dropped += 1
            if self.policy == "drop_newest":
                return
            items.popleft()
        items.append(event)
        self.enqueued += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)


class Bus:
    def __init__(self, timer: "StageTimer | None" = None) -> None:
        self._timer = timer  # when set, every hot handler's duration is recorded under its name
        self._subs: dict[type, list[_Subscription]] = defaultdict(list)
        self._queues: dict[type, list[SlowQueue]] = defaultdict(list)
        self._seq = 0
        self.published: dict[str, int] = defaultdict(int)
        self.handler_errors: dict[str, int] = defaultdict(int)

    def subscribe(self, event_type: type, handler: Handler, *, name: str, order: int = 100) -> None:
        """Register a hot-path handler for exactly `event_type` (no subclass matching)."""
        self._seq += 1
        if self._timer is not None:
            handler = self._timer.wrap(name, handler)
        subs = self._subs[event_type]
        subs.append(_Subscription(order, self._seq, name, handler))
        subs.sort()

    def subscribe_queue(self, event_type: type, *, name: str, maxsize: int = 10_000,
                        policy: str = "drop_oldest", queue: SlowQueue | None = None) -> SlowQueue:
        """Register a slow consumer; pass `queue` to feed several event types into one queue."""
        q = queue or SlowQueue(name, maxsize, policy)
        self._queues[event_type].append(q)
        return q

    def has_subscribers(self, event_type: type) -> bool:
        return bool(self._subs.get(event_type)) or bool(self._queues.get(event_type))

    def publish(self, event: Any) -> None:
        event_type = type(event)
        self.published[event_type.__name__] += 1
        # Slow queues first, so records keep causal order: an intent is queued before the
        # verdict and order that its hot handlers publish from inside this call.
        for q in self._queues.get(event_type, ()):
            q.offer(event)
        for sub in self._subs.get(event_type, ()):
            try:
                sub.handler(event)
            except Exception:  # contained: one bad handler must not stop the line
                self.handler_errors[sub.name] += 1
                log.exception("handler_failed", handler=sub.name,
                              event_type=event_type.__name__,
                              event_id=getattr(event, "event_id", None))

    def queue_stats(self) -> dict[str, dict[str, int]]:
        seen: dict[str, dict[str, int]] = {}
        for queues in self._queues.values():
            for q in queues:
                seen[q.name] = {"enqueued": q.enqueued, "dropped": q.dropped, "depth": q.qsize()}
        return seen
