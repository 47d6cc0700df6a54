"""Tick-to-order latency on the rule path.

For every bar close that leads to an order, measures the time from the bar's publication on the bus
(the moment the closing tick has been turned into a bar) until the venue receives the order:
strategy, decision, risk verdict, order manager (with its write-ahead journal) and the venue call.
Runs the EMA cross on synthetic ticks with 20-tick bars so that many bars trade, with the journal
unsynced (replay) and fsynced per record (live). Reports p50/p99/max in microseconds and the ratio
to a baseline measured in the same process (an empty bus publish with one no-op handler).
Usage: python bench/bench_tick_to_order.py [--ticks N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from himari.daemon.app import build_session, warmup
from himari.daemon.bus import Bus
from himari.daemon.config import load_config
from himari.daemon.events import Bar, Decision
from himari.daemon.logs import configure_logging


def measure(n_ticks: int, fsync: bool) -> np.ndarray:
    cfg = load_config(None, [f"feed.synthetic.n_ticks={n_ticks}", 'strategy.name="ema_cross"',
                             "strategy.params.bar_spec=\"20t\"",
                             "strategy.params.fast=2", "strategy.params.slow=4",
                             "matrices.enabled=false", "replay.progress=false",
                             f"report.journal_fsync={'true' if fsync else 'false'}",
                             "risk.max_orders_per_minute=100000"])
    samples: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        session = build_session(cfg, [], Path(tmp))
        warmup(session)
        started = [0]
        session.bus.subscribe(Bar, lambda bar: started.__setitem__(0, time.perf_counter_ns()),
                              name="bench.bar_start", order=-1)
        submit = session.client.submit

        def timed_submit(request):  # type: ignore[no-untyped-def]
            # Only the order a bar close sends; the opening leg of a flip follows the close's
            # fill on a later tick and is not a bar-to-order path.
            if started[0]:
                samples.append(time.perf_counter_ns() - started[0])
                started[0] = 0
            submit(request)

        session.client.submit = timed_submit  # type: ignore[method-assign]
        for batch in session.source.batches():
            session.loop.process(batch)
        if session.journal is not None:
            session.journal.close()
    return np.asarray(samples[1:], dtype=np.float64) / 1000.0  # the first includes lazy set-up


def baseline(n: int = 20_000) -> np.ndarray:
    bus = Bus()
    bus.subscribe(Decision, lambda e: None, name="noop")
    ev = Decision(event_id="D", ts_ns=0, strategy_id="s", instrument_id="X", source_id="B",
                  target_position=0)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        bus.publish(ev)
        out[i] = time.perf_counter_ns() - t0
    return out / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=200_000)
    args = ap.parse_args()
    configure_logging("warning", "console")
    base = float(np.percentile(baseline(), 50))
    print(f"tick-to-order latency, EMA cross on 20-tick bars ({args.ticks:,} synthetic ticks), us")
    print(f"  {'run':<26}{'orders':>8}{'p50':>9}{'p99':>9}{'max':>9}{'p50/base':>10}")
    print(f"  {'baseline: bus publish':<26}{'':>8}{base:>9.2f}")
    for label, fsync in (("journal unsynced", False), ("journal fsync", True)):
        s = measure(args.ticks, fsync)
        p50, p99 = np.percentile(s, 50), np.percentile(s, 99)
        print(f"  {label:<26}{s.size:>8,}{p50:>9.2f}{p99:>9.2f}{s.max():>9.2f}{p50 / base:>10.1f}")


if __name__ == "__main__":
    main()
