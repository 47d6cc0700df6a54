"""Replay throughput and per-stage latency on synthetic trade ticks.

Runs, in one process and on the same generated ticks:
  1. baseline "feed": generating the batches and touching every tick (the floor);
  2. baseline "feed+bars": the same plus the 250-tick bar kernel alone;
  3. the full pipeline (`himari replay`'s code path: bars, EMA cross, risk, order manager, simulated
     venue, report), with the feature matrices off and on.
Prints ticks/s for each, the pipeline's ratio to the baselines, and the pipeline's per-stage
p50/p99 latency (microseconds). Usage: python bench/bench_replay.py [--ticks N] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from himari.daemon.app import run_replay
from himari.daemon.bars import NO_EVENT, BarBuilder, BarSpec
from himari.daemon.config import (HimariConfig, MatricesConfig, ReplayConfig, ReportConfig,
                                  StrategySection)
from himari.daemon.feeds.config import FeedConfig, SyntheticConfig
from himari.daemon.ids import IdSource
from himari.daemon.logs import configure_logging


def config(n_ticks: int, matrices: bool) -> HimariConfig:
    base = HimariConfig()
    return msgspec.structs.replace(
        base,
        feed=FeedConfig(synthetic=SyntheticConfig(n_ticks=n_ticks)),
        matrices=MatricesConfig(enabled=matrices),
        replay=ReplayConfig(progress=False),
        report=ReportConfig(decision_log=True),
        # pinned: the baselines below are 250-tick bars, the EMA cross's (the default is now the
        # ensemble, measured by bench/bench_ensemble.py)
        strategy=StrategySection(name="ema_cross", params={"bar_spec": "250t"}),
    )


def baseline_feed(cfg: HimariConfig, with_bars: bool) -> tuple[float, int]:
    from himari.daemon.feeds.synthetic import SyntheticFeed

    t0 = time.perf_counter()
    feed = SyntheticFeed(cfg.feed)
    builder = BarBuilder(BarSpec.parse("250t"), "SYN", IdSource()) if with_bars else None
    n = 0
    checksum = 0
    for batch in feed.batches():
        n += len(batch)
        checksum += int(batch.price[-1])
        if builder is not None:
            builder.start_batch(batch)
            while builder.pending_gap != NO_EVENT:
                builder.take_bar()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    configure_logging("warning", "console")

    results: dict[str, list[float]] = {}
    reports = {}
    for _ in range(args.repeat):
        for name, with_bars in (("feed", False), ("feed+bars", True)):
            secs, n = baseline_feed(config(args.ticks, False), with_bars)
            results.setdefault(name, []).append(n / secs)
        for name, matrices in (("pipeline", False), ("pipeline+matrices", True)):
            with tempfile.TemporaryDirectory() as tmp:
                rep = asyncio.run(run_replay(config(args.ticks, matrices), [], Path(tmp)))
            results.setdefault(name + " (ready to report)", []).append(rep["ticks_per_second"])
            results.setdefault(name + " (with start-up)", []).append(
                rep["ticks_per_second_with_startup"])
            reports[name] = rep

    print(f"replay benchmark: {args.ticks:,} synthetic trade ticks, EMA cross on 250-tick bars, "
          f"median of {args.repeat} runs")
    print(f"  {'run':<34}{'ticks/s':>14}{'vs feed':>10}{'vs feed+bars':>14}")
    feed = statistics.median(results["feed"])
    bars = statistics.median(results["feed+bars"])
    for name, values in results.items():
        v = statistics.median(values)
        print(f"  {name:<34}{v:>14,.0f}{v / feed:>10.3f}{v / bars:>14.3f}")
    for name, rep in reports.items():
        print(f"\n  {name}: {rep['bars']:,} bars, {rep['decisions']:,} decisions, {rep['fills']:,} fills; "
              "per-stage latency (us):")
        print(f"    {'stage':<26}{'p50':>10}{'p99':>10}{'count':>10}")
        for stage, s in sorted(rep["stage_latency_us"].items()):
            print(f"    {stage:<26}{s['p50']:>10.2f}{s['p99']:>10.2f}{s['count']:>10,}")


if __name__ == "__main__":
    main()
