"""Ensemble decision cost, per-agent cost, memory over 1,000 decisions, replay throughput.

Agents are the real ones when their checkpoints load from the shipped directory (or --checkpoints);
any that do not are replaced by a labelled stand-in: a numpy MLP 257-64-64-3 (the size class the
D-agents are asked to keep), a fixed-output tactical / strategic team. Prints:
  1. each voter's act p50/p99 (us, batch of one) and the full `decide` p50/p99 (every agent,
     voting, scaling, the breakdown dict the record carries), the engine's own overhead (decide
     with zero-cost agents), the mean CPU (thread) time of both, and the teams timed directly
     (tactical: team + 2.4 aggregation; strategic: 3.1 inputs + team + 3.3 ensemble), since they
     run outside the per-bar loop (after a go-ahead / on a 30-minute matrix or a synergy);
  2. RSS growth over 1,000 consecutive decisions after a warm-up (target < 20 MB);
  3. default replays (1,000,000 synthetic ticks): the EMA cross with matrices on (the baseline),
     the ensemble as configured by default (deciding once a ready strategic matrix exists) and
     deciding on every closed 5-minute bar: ticks/s from ready to report (target >= 1,000,000)
     and the ratio to the baseline, which survives a busy machine better than absolute figures.
Usage: python bench/bench_ensemble.py [--decisions N] [--ticks N] [--checkpoints DIR] [--no-replay]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from himari.decision import registry
from himari.decision.agent import AgentInput, Vote
from himari.decision.aggregate import aggregate_tactical
from himari.decision.engine import STRATEGIC, TACTICAL, DecisionEngine
from himari.decision.registry import AGENTS, TEAMS, checkpoint_dir, load_all

BAR = 300 * 1_000_000_000
T0 = 1_704_182_400 * 1_000_000_000


class MlpStandIn:
    """A D-agent stand-in with a realistic cost: z-score + MLP 257-64-64-3 + softmax in numpy."""

    def __init__(self, name: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.name = name
        self.w1 = (rng.standard_normal((257, 64)) * 0.05).astype(np.float32)
        self.w2 = (rng.standard_normal((64, 64)) * 0.1).astype(np.float32)
        self.w3 = (rng.standard_normal((64, 3)) * 0.1).astype(np.float32)
        self.mu = np.zeros(257, np.float32)
        self.sd = np.ones(257, np.float32)
        self._z = np.zeros(257, np.float32)

    def reset(self) -> None:
        pass

    def act(self, inp: AgentInput) -> Vote:
        np.subtract(inp.x, self.mu, out=self._z)
        self._z /= self.sd
        h = np.maximum(self._z @ self.w1, 0.0)
        h = np.maximum(h @ self.w2, 0.0)
        logits = h @ self.w3
        e = np.exp(logits - logits.max())
        p = e / e.sum()
        return Vote(probs=(float(p[0]), float(p[1]), float(p[2])), confidence=float(p.max()))

    def observe(self, inp: AgentInput, action: int, reward: float) -> None:
        pass


class NullAgent(MlpStandIn):
    def act(self, inp: AgentInput) -> Vote:
        return Vote(probs=(0.2, 0.3, 0.5), confidence=0.5)


class TacticalStandIn:
    def probs(self, tactical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.array([0.1, 0.1, 0.8]), np.array([0.1, 0.2, 0.7]), np.array([0.1, 0.8, 0.1])


class StrategicStandIn:
    weights = (0.4, 0.35, 0.25)

    def probs(self, mlmi_in: np.ndarray, nwrqk_in: np.ndarray, regime_in: np.ndarray,
              volatility_30: float) -> tuple[np.ndarray, np.ndarray]:
        p = np.array([[0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])
        return p, np.array(self.weights)


def load_voters(directory: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Real agents where they load, labelled stand-ins elsewhere -> (objects, labels)."""
    loaded, _ = load_all([*AGENTS, *TEAMS], directory)
    objs: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for i, name in enumerate([*AGENTS, *TEAMS]):
        if name in loaded:
            objs[name], labels[name] = loaded[name], "real"
        elif name == TACTICAL:
            objs[name], labels[name] = TacticalStandIn(), "stand-in (fixed probs)"
        elif name == STRATEGIC:
            objs[name], labels[name] = StrategicStandIn(), "stand-in (fixed probs)"
        else:
            objs[name], labels[name] = MlpStandIn(name, i), "stand-in (numpy MLP 257-64-64-3)"
    return objs, labels


def build_engine(objs: dict[str, Any]) -> DecisionEngine:
    agents = {n: a for n, a in objs.items() if n in AGENTS}
    return DecisionEngine(agents, tactical_team=objs[TACTICAL], strategic_team=objs[STRATEGIC])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def decisions(engine: DecisionEngine, n: int, seed: int = 0,
              per_agent: dict[str, list[float]] | None = None) -> list[float]:
    rng = np.random.default_rng(seed)
    tac = rng.standard_normal((60, 7)).astype(np.float32)
    strat = rng.standard_normal((48, 13)).astype(np.float32)
    close = 100.0
    out = []
    perf = time.perf_counter_ns
    for k in range(n):
        ts = T0 + k * BAR
        if k % 6 == 0:
            engine.on_strategic(ts, strat, 1.0)
        if k % 50 == 0:  # a synergy now and then: the tactical team votes for the next 6 bars
            engine.on_synergy(ts, strat, 2, 1, 0.8)
        close *= 1.0 + 0.001 * rng.standard_normal()
        t0 = perf()
        dec = engine.decide(ts, tac, strat, close=close, position=0)
        dec.details()  # the record's breakdown is part of a decision's cost
        out.append((perf() - t0) / 1000.0)
        if per_agent is not None:
            for name, st, lat in zip(engine.names, dec._status, dec._lat):
                if st == 0:  # ok
                    per_agent.setdefault(name, []).append(lat / 1000.0)
    return out


def replay(ticks: int, objs: dict[str, Any], strategy: str = "ensemble",
           params: dict[str, Any] | None = None) -> dict[str, Any]:
    from himari.daemon.app import run_replay
    from himari.daemon.config import HimariConfig, ReplayConfig, ReportConfig, StrategySection
    from himari.daemon.feeds.config import FeedConfig, SyntheticConfig

    real = registry.resolve

    def resolve(path: str) -> Any:  # hand the replay the same agents (real or stand-in)
        name = next(n for n, p in {**AGENTS, **TEAMS}.items() if p == path)
        obj = objs[name]
        return lambda *a: obj

    registry.resolve = resolve
    try:
        cfg = msgspec.structs.replace(
            HimariConfig(), feed=FeedConfig(synthetic=SyntheticConfig(n_ticks=ticks)),
            strategy=StrategySection(name=strategy, params=params or {}),
            replay=ReplayConfig(progress=False), report=ReportConfig(decision_log=True))
        with tempfile.TemporaryDirectory() as tmp:
            return asyncio.run(run_replay(cfg, [], Path(tmp)))
    finally:
        registry.resolve = real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=5000)
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--checkpoints", default="")
    ap.add_argument("--no-replay", action="store_true")
    args = ap.parse_args()
    from himari.daemon.logs import configure_logging

    configure_logging("warning", "console")
    objs, labels = load_voters(checkpoint_dir(args.checkpoints))

    engine = build_engine(objs)
    decisions(engine, 500)  # warm-up (first calls, Numba dispatch, caches)
    per_agent: dict[str, list[float]] = {}
    c0 = time.thread_time()
    full = decisions(build_engine(objs), args.decisions, 1, per_agent)
    cpu_full = (time.thread_time() - c0) / args.decisions * 1e6
    null = build_engine({**{n: NullAgent(n, 0) for n in AGENTS},
                         TACTICAL: TacticalStandIn(), STRATEGIC: StrategicStandIn()})
    decisions(null, 200)
    c0 = time.thread_time()
    overhead = decisions(null, args.decisions, 2)
    cpu_null = (time.thread_time() - c0) / args.decisions * 1e6

    print(f"ensemble decision benchmark: {args.decisions:,} decisions, batch of one")
    print(f"  {'voter':<12}{'p50 us':>10}{'p99 us':>10}{'n':>8}  agent")
    for name in engine.names:
        v = per_agent.get(name, [])
        if v:
            print(f"  {name:<12}{pct(v, 50):>10.1f}{pct(v, 99):>10.1f}{len(v):>8}  {labels[name]}")
        else:
            print(f"  {name:<12}{'-':>10}{'-':>10}{0:>8}  {labels[name]} (never voted)")
    print(f"  {'decide':<12}{pct(full, 50):>10.1f}{pct(full, 99):>10.1f}{len(full):>8}  "
          "every voter + voting + scaling + breakdown")
    print(f"  {'overhead':<12}{pct(overhead, 50):>10.1f}{pct(overhead, 99):>10.1f}"
          f"{len(overhead):>8}  engine alone (zero-cost agents)")
    print(f"  CPU time per decision (mean, thread time, less sensitive to other processes): "
          f"full {cpu_full:.1f} us, engine alone {cpu_null:.1f} us (both include the bench "
          "loop's own input generation)")

    # The teams run outside `decide`'s per-bar loop (tactical only after a go-ahead, strategic on
    # a 30-minute matrix or a synergy): timed directly, with the engine's own glue.
    rng = np.random.default_rng(4)
    tac = rng.standard_normal((60, 7)).astype(np.float32)
    strat = rng.standard_normal((48, 13)).astype(np.float32)
    eng = build_engine(objs)
    for label, fn in (("tactical", lambda: aggregate_tactical(*objs[TACTICAL].probs(tac), 2, 1)),
                      ("strategic", lambda: eng._run_strategic(T0, strat, 0.8, 1))):
        for _ in range(50):
            fn()
        lat = []
        for _ in range(min(args.decisions, 2000)):
            t0 = time.perf_counter_ns()
            fn()
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
        print(f"  {label + '*':<12}{pct(lat, 50):>10.1f}{pct(lat, 99):>10.1f}{len(lat):>8}  "
              f"{labels[label]}: team + aggregation, timed directly")

    mem = build_engine(objs)
    decisions(mem, 200)
    before = rss_mb()
    decisions(mem, 1000, 3)
    grown = rss_mb() - before
    print(f"\n  RSS growth over 1,000 consecutive decisions: {grown:.2f} MB (target < 20 MB)")

    if not args.no_replay:
        base = replay(args.ticks, objs, "ema_cross")
        runs = (("default (decides once a ready strategic matrix exists)", {}),
                ("every closed 5-minute bar (wait_for_strategic = false)",
                 {"wait_for_strategic": False}))
        print(f"\n  replay, {args.ticks:,} synthetic ticks; EMA cross with matrices on: "
              f"{base['ticks_per_second']:,.0f} ticks/s ready-to-report")
        for label, params in runs:
            rep = replay(args.ticks, objs, "ensemble", params)
            ens = rep["strategy"]["details"][0]
            print(f"  ensemble, {label}: {ens['decisions']:,} decisions, "
                  f"{rep['ticks_per_second']:,.0f} ticks/s ready-to-report "
                  f"({rep['ticks_per_second_with_startup']:,.0f} with start-up; target >= "
                  f"1,000,000); ensemble / EMA cross = "
                  f"{rep['ticks_per_second'] / base['ticks_per_second']:.3f}")
            s = rep["stage_latency_us"].get("ensemble.bar")
            if s:
                print(f"    ensemble.bar (per bar, decision + record + orders): p50 "
                      f"{s['p50']:.1f} us, p99 {s['p99']:.1f} us, n {s['count']:,}")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\n  machine: {os.cpu_count()} cores, load average {' '.join(load)} (wall-clock "
          "percentiles grow with contention; compare ratios)")
    print("\n  labels: 'real' = loaded from a shipped checkpoint; 'stand-in' = no checkpoint yet")


if __name__ == "__main__":
    main()
