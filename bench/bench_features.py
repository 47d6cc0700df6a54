"""Cost of the decision side's per-bar feature work and of the training data's batched paths.

Per decision (batch of one, each call timed alone with `time.perf_counter_ns`, p50 / p99):
- feature_vector:    the raw 257-value x from the matrices, regime, position state and time;
- normalize:         FeatureStats.normalize of one x (preallocated output);
- strategic_inputs:  the strategic team's 10 / 10 / 9 inputs from a 48x13 matrix;
- copy_baseline:     np.copyto of 257 float32 values (the floor of any per-call numpy work);
`x base` is each p50 over the baseline's p50.
Batched (training, per row): feature_matrix over a random BarDataset and the env step.

Run: .venv/bin/python bench/bench_features.py [--n 20000]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np

from himari.decision.features import (PositionState, feature_matrix, feature_vector, fit_stats,
                                      strategic_inputs)
from himari.training.dataset import random_dataset
from himari.training.env import TradingEnv


def _time(fn: Callable[[], object], n: int) -> np.ndarray:
    for _ in range(min(n, 2000)):
        fn()
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tac = rng.uniform(-1, 1, (60, 7)).astype(np.float32)
    strat = rng.uniform(-1, 1, (48, 13)).astype(np.float32)
    pos = PositionState(1.0, 0.7, 12.0, 0.9)
    ts = 1_704_205_800_000_000_000
    x = np.empty(257, np.float32)
    z = np.empty(257, np.float32)
    ds = random_dataset(20_000, 2, seed=0)
    stats = fit_stats(feature_matrix(ds, np.arange(0, 20_000, 7)))
    src = np.ones(257, np.float32)
    cases = {
        "copy_baseline": lambda: np.copyto(x, src),
        "feature_vector": lambda: feature_vector(tac, strat, 2, None, pos, ts, out=x),
        "normalize": lambda: stats.normalize(x, out=z),
        "strategic_inputs": lambda: strategic_inputs(strat, None, ts),
    }
    print(f"python {platform.python_version()}, numpy {np.__version__}, n = {args.n}")
    base = None
    for name, fn in cases.items():
        t = _time(fn, args.n)
        p50, p99 = np.percentile(t, 50) / 1e3, np.percentile(t, 99) / 1e3
        base = base or p50
        print(f"{name:18s} p50 {p50:7.2f} us  p99 {p99:7.2f} us  x base {p50 / base:6.1f}")
    idx = np.flatnonzero(ds.ready)
    feature_matrix(ds, idx[:10])  # load the kernel first
    t0 = time.perf_counter()
    feature_matrix(ds, idx)
    per_row = (time.perf_counter() - t0) / len(idx) * 1e6
    print(f"feature_matrix     {per_row:7.2f} us a row over {len(idx):,} rows")
    env = TradingEnv(ds, stats, seed=0)
    env.reset(seed=0)
    steps, t0 = 0, time.perf_counter()
    while steps < 20_000:
        _, _, term, trunc, _ = env.step(int(rng.integers(3)))
        steps += 1
        if term or trunc:
            env.reset()
    print(f"env step           {(time.perf_counter() - t0) / steps * 1e6:7.2f} us a step "
          "(resets included)")


if __name__ == "__main__":
    main()
