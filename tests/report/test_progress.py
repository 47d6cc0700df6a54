"""Replay progress: a tqdm bar on a terminal, structlog lines in logs, nothing when off, and the
hot path touches nothing but one comparison between checkpoints."""

from __future__ import annotations

import io

from structlog.testing import capture_logs

from himari.daemon.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_a_line_at_each_tenth_of_a_known_total() -> None:
    clock = Clock()
    p = Progress(True, 10_000_000, stream=io.StringIO(), clock=clock)
    with capture_logs() as logs:
        for ticks in range(250_000, 10_000_001, 250_000):  # 40 batches
            clock.now += 0.1
            p.update(ticks)
        p.close(10_000_000)
    lines = [e for e in logs if e["event"] == "replay_progress"]
    assert [e["pct"] for e in lines] == [10.0 * k for k in range(1, 11)]
    assert lines[-1]["ticks"] == 10_000_000 and lines[-1]["eta_s"] == 0.0
    assert lines[0]["ticks_per_s"] == 1_000_000 / 0.4 and lines[0]["total"] == 10_000_000


def test_unknown_total_logs_every_n_seconds_and_a_last_line() -> None:
    clock = Clock()
    p = Progress(True, None, stream=io.StringIO(), every_s=10.0, check_ticks=1_000_000,
                 clock=clock)
    with capture_logs() as logs:
        for k in range(1, 31):  # 30 M ticks, 1 s of wall time per million
            clock.now = float(k)
            p.update(k * 1_000_000)
        p.close(30_500_000)
    lines = [e for e in logs if e["event"] == "replay_progress"]
    assert [e["ticks"] for e in lines] == [10_000_000, 20_000_000, 30_000_000, 30_500_000]
    assert all("pct" not in e for e in lines)


def test_a_terminal_gets_a_tqdm_bar_and_no_log_lines() -> None:
    tty = Tty()
    p = Progress(True, 4_000_000, stream=tty)
    with capture_logs() as logs:
        for ticks in range(100_000, 4_000_001, 100_000):
            p.update(ticks)
        p.close(4_000_000)
    assert not [e for e in logs if e["event"] == "replay_progress"]
    text = tty.getvalue()
    assert "replay" in text and "100%" in text and "4.00M" in text


def test_off_or_short_replays_show_nothing_and_never_read_the_clock() -> None:
    for enabled, total in ((False, 50_000_000), (False, None), (True, 1_000_000)):
        clock, tty = Clock(), Tty()
        p = Progress(enabled, total, stream=tty, clock=clock, min_ticks=2_000_000)
        calls_at_start = clock.calls
        with capture_logs() as logs:
            for ticks in range(0, 60_000_000, 500_000):
                p.update(ticks)
            p.close(60_000_000)
        assert not logs and tty.getvalue() == ""
        assert clock.calls == calls_at_start


def test_between_checkpoints_update_is_one_comparison() -> None:
    clock = Clock()
    p = Progress(True, 100_000_000, stream=io.StringIO(), clock=clock)  # checkpoint: 500k ticks
    calls = clock.calls
    for ticks in range(1_000, 500_000, 1_000):  # 499 batches below the first checkpoint
        p.update(ticks)
    assert clock.calls == calls
    p.update(500_000)
    assert clock.calls == calls + 1
