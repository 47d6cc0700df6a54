"""The bus's ordering, containment and slow queues; the replay clock's timers."""

from __future__ import annotations


import pytest

from himari.daemon.bus import Bus, SlowQueue
from himari.daemon.clock import ReplayClock
from himari.daemon.events import Decision
from himari.daemon.stagetimer import StageTimer


def decision(i: int) -> Decision:
    return Decision(event_id=f"D{i}", ts_ns=i, strategy_id="s", instrument_id="X", source_id="B",
                    target_position=i)


def test_handlers_run_in_declared_order_and_nested_publish_is_depth_first():
    bus = Bus()
    seen: list[str] = []

    class Other(Decision, frozen=True, kw_only=True):
        pass

    bus.subscribe(Decision, lambda e: seen.append("late"), name="late", order=90)
    bus.subscribe(Decision, lambda e: (seen.append("early"), bus.publish(Other(
        event_id="O", ts_ns=0, strategy_id="s", instrument_id="X", source_id="B",
        target_position=0))), name="early", order=10)
    bus.subscribe(Other, lambda e: seen.append("nested"), name="nested")
    bus.publish(decision(1))
    assert seen == ["early", "nested", "late"]


def test_a_failing_handler_is_contained_and_counted():
    bus = Bus()
    seen: list[int] = []

    def boom(e: Decision) -> None:
        raise RuntimeError("bad handler")

    bus.subscribe(Decision, boom, name="boom", order=1)
    bus.subscribe(Decision, lambda e: seen.append(e.target_position), name="ok", order=2)
    bus.publish(decision(7))
    bus.publish(decision(8))
    assert seen == [7, 8]
    assert bus.handler_errors["boom"] == 2


def test_timed_bus_records_each_handler():
    timer = StageTimer(capacity=16)
    bus = Bus(timer=timer)
    bus.subscribe(Decision, lambda e: None, name="h")
    for i in range(3):
        bus.publish(decision(i))
    assert timer.summary()["h"]["count"] == 3


async def test_slow_queue_drop_oldest_keeps_newest_and_counts():
    bus = Bus()
    q = bus.subscribe_queue(Decision, name="slow", maxsize=3, policy="drop_oldest")
    for i in range(5):
        bus.publish(decision(i))
    assert q.dropped == 2
    got = [q.get_nowait().target_position for _ in range(q.qsize())]
    assert got == [2, 3, 4]


async def test_slow_queue_drop_newest_keeps_oldest():
    q = SlowQueue("s", 2, "drop_newest")
    for i in range(4):
        q.offer(i)
    assert (q.dropped, q.get_nowait(), q.get_nowait()) == (2, 0, 1)
    assert q.qsize() == 0


def test_slow_queue_rejects_bad_policy():
    with pytest.raises(ValueError, match="policy"):
        SlowQueue("s", 2, "block")


def test_replay_clock_fires_timers_in_timestamp_order_and_never_goes_back():
    clock = ReplayClock()
    fired: list[tuple[int, int]] = []
    clock.set_timer(30, lambda due: fired.append((due, clock.now_ns())))
    clock.set_timer(10, lambda due: fired.append((due, clock.now_ns())))
    clock.set_timer(10, lambda due: fired.append((-due, clock.now_ns())))
    clock.advance_to(20)
    assert fired == [(10, 10), (-10, 10)]
    assert clock.now_ns() == 20
    clock.advance_to(5)
    assert clock.now_ns() == 20
    clock.advance_to(30)
    assert fired[-1] == (30, 30)


async def test_slow_queue_sees_events_in_causal_order_when_handlers_publish():
    bus = Bus()
    q = bus.subscribe_queue(Decision, name="records", maxsize=10)
    bus.subscribe(Decision, lambda e: bus.publish(decision(e.target_position + 1))
                  if e.target_position < 3 else None, name="chain")
    bus.publish(decision(1))
    assert [q.get_nowait().target_position for _ in range(q.qsize())] == [1, 2, 3]
