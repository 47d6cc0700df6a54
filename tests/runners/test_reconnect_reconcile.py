"""After the venue's link comes back the live runner reconciles, even when the drop and the
reconnect both happened between two of its polls (found by tests/e2e/test_paper_faults.py:
drop_ws twice within a second lost a fill the stream never delivered), and reconciles once more at
the stop (a fill held back or lost just before it was never booked)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from himari.daemon.runners.live import LiveRunner


class FakeOm:
    def __init__(self) -> None:
        self.connected = True
        self.counters: dict[str, int] = defaultdict(int, connection_connected=1)
        self.reconciled = asyncio.Event()
        self.calls = 0

    async def reconcile(self, client: object, ts_ns: int) -> dict[str, int]:
        self.calls += 1
        self.reconciled.set()
        return {"fills_booked": 0}

    def overdue(self, ts_ns: int) -> list[object]:
        return []


async def test_a_flap_between_two_polls_is_reconciled() -> None:
    om = FakeOm()
    runner = SimpleNamespace(core=SimpleNamespace(om=om, client=object()),
                             cfg=SimpleNamespace(live=SimpleNamespace(cancel_on_disconnect=False)),
                             clock=SimpleNamespace(now_ns=lambda: 1))
    watch = LiveRunner.watch_overdue(runner, every_s=0.001)  # type: ignore[arg-type]
    task = asyncio.create_task(watch)
    try:
        # polls while nothing happens reconcile nothing
        for _ in range(5):
            await asyncio.sleep(0.002)
        assert om.calls == 0
        # disconnected and connected again at once: `connected` is true at every poll
        om.counters["connection_disconnected"] += 1
        om.counters["connection_connected"] += 1
        await asyncio.wait_for(om.reconciled.wait(), 5)
        assert om.calls == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class StopOm(FakeOm):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail

    async def reconcile(self, client: object, ts_ns: int) -> dict[str, int]:
        await super().reconcile(client, ts_ns)
        if self.fail:
            raise ConnectionError("broker unreachable")
        return {"fills_booked": 1}


class DrainClient:
    def __init__(self) -> None:
        self.drained = False

    async def drain(self) -> None:
        self.drained = True


def stop_runner(om: FakeOm, matching: object = None) -> tuple[SimpleNamespace, DrainClient]:
    client = DrainClient()
    core = SimpleNamespace(om=om, client=client, matching=matching,
                           cache=SimpleNamespace(open_orders=lambda: []))
    return SimpleNamespace(core=core, clock=SimpleNamespace(now_ns=lambda: 1)), client


async def test_the_stop_reconciles_with_a_remote_venue_after_the_cancels_are_out() -> None:
    om = StopOm()
    runner, client = stop_runner(om)
    await LiveRunner.reconcile_at_stop(runner)  # type: ignore[arg-type]
    assert client.drained and om.calls == 1


async def test_the_stop_does_not_reconcile_with_the_in_process_exchange() -> None:
    om = StopOm()
    runner, client = stop_runner(om, matching=object())
    await LiveRunner.reconcile_at_stop(runner)  # type: ignore[arg-type]
    assert om.calls == 0 and not client.drained


async def test_a_failed_reconcile_at_the_stop_is_logged_and_the_stop_goes_on() -> None:
    om = StopOm(fail=True)
    runner, _ = stop_runner(om)
    await LiveRunner.reconcile_at_stop(runner)  # type: ignore[arg-type]
    assert om.calls == 1


async def test_cancel_on_disconnect_is_a_policy() -> None:
    """With live.cancel_on_disconnect every working order is cancelled when the link drops;
    without it they stay working and the reconnect reconciles."""
    for policy in (True, False):
        om = FakeOm()
        asked: list[str] = []
        om.cancel_all = lambda reason="": asked.append(reason) or 3  # type: ignore[attr-defined]
        runner = SimpleNamespace(
            core=SimpleNamespace(om=om, client=object()),
            cfg=SimpleNamespace(live=SimpleNamespace(cancel_on_disconnect=policy)),
            clock=SimpleNamespace(now_ns=lambda: 1))
        task = asyncio.create_task(LiveRunner.watch_overdue(runner, every_s=0.001))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the watcher's first step: it has read the counters
        try:
            om.counters["connection_disconnected"] += 1
            om.connected = False
            for _ in range(50):
                await asyncio.sleep(0.002)
                if asked:
                    break
            om.connected = True
            om.counters["connection_connected"] += 1
            await asyncio.wait_for(om.reconciled.wait(), 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert asked == (["cancel_on_disconnect"] if policy else [])
