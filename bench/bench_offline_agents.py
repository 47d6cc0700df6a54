"""Cost of one decision of the offline agents, CQL (D3) and discrete SAC (D6), batch of one.

- act:      `agent.act(AgentInput)`: finiteness check, z-score + clip, the Numba MLP forward (two
            critics and a min for CQL, the actor for SAC), softmax, the Vote;
- forward:  the fused Numba kernel alone;
- baseline: one numpy float32 matvec of the first layer (64 x 257), the floor any Python-called
            network pays; `x base` is each p50 over the baseline p50.
Budget (common.md): every D-agent's act <= ~15 us p50. Each call is timed alone with
`time.perf_counter_ns`; on a shared, loaded machine read the p50, not the p99.

Run: .venv/bin/python bench/bench_offline_agents.py [--n 20000] [--dir decision/checkpoints]
(without shipped checkpoints in --dir, random weights of the same sizes are used).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from himari.decision.agent import AgentInput
from himari.decision.checkpoint import DEFAULT_DIR, save_checkpoint
from himari.decision.layout import FEATURE_DIM
from himari.decision.nets import cql, sac


def _time(fn: Callable[[], object], n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    for _ in range(n // 10):  # warm caches
        fn()
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out / 1000.0


def _random_checkpoint(directory: Path, kind: str, members: int, layer_norm: bool) -> None:
    rng = np.random.default_rng(0)
    h = 64
    t = {"w1": rng.standard_normal((members, h, FEATURE_DIM)) * 0.05,
         "b1": np.zeros((members, h)), "ln_g": np.ones((members, h)),
         "ln_b": np.zeros((members, h)), "w2": rng.standard_normal((members, h, h)) * 0.1,
         "b2": np.zeros((members, h)), "w3": rng.standard_normal((members, 3, h)) * 0.1,
         "b3": np.zeros((members, 3)), "feat_scale": np.ones(FEATURE_DIM),
         "feat_offset": np.zeros(FEATURE_DIM)}
    save_checkpoint(directory, kind, {k: v.astype(np.float32) for k, v in t.items()},
                    {"agent": kind, "arch": {"n_members": members, "in_dim": FEATURE_DIM,
                                             "hidden": [h, h], "out_dim": 3,
                                             "layer_norm": layer_norm, "z_clip": 10.0}})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    agents = {}
    for kind, module, members, ln in (("cql", cql, 2, True), ("sac", sac, 1, False)):
        directory = args.dir
        if not (directory / f"{kind}.safetensors").exists():
            _random_checkpoint(tmp, kind, members, ln)
            directory = tmp
        agents[kind] = (module.load(directory, kind), directory)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(FEATURE_DIM).astype(np.float32)
    inp = AgentInput(ts_ns=0, instrument_id="B", x=x, tactical=np.zeros((60, 7), np.float32),
                     strategic=None, regime=2, target_sharpe=2.0, position=0)
    w = rng.standard_normal((64, FEATURE_DIM)).astype(np.float32)
    base = _time(lambda: w @ x, args.n)
    b50 = float(np.percentile(base, 50))
    print(f"python {platform.python_version()}, n={args.n}, times in us (p50 / p99)")
    print(f"{'baseline matvec 64x257':28s} {b50:7.2f} / {np.percentile(base, 99):7.2f}")
    for kind, (agent, directory) in agents.items():
        for label, fn in (("act", lambda: agent.act(inp)),
                          ("forward", lambda: agent._net.forward(x))):
            t = _time(fn, args.n)
            p50, p99 = float(np.percentile(t, 50)), float(np.percentile(t, 99))
            print(f"{kind + ' ' + label:28s} {p50:7.2f} / {p99:7.2f}   x base {p50 / b50:5.2f}"
                  f"   ({directory})")


if __name__ == "__main__":
    main()
