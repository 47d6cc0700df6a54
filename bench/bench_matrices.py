"""Per-bar cost of the feature-matrix assemblers (tactical 60x7, strategic 48x13).

N synthetic closed 5-minute bars (a seeded random walk in ticks, tick 0.25, volumes 1..999) are made up
front; each `on_bar` call is then timed alone with `time.perf_counter_ns`, garbage collection left on as
in the daemon, after the numba kernels are warmed and after a settle pass on separate assemblers. Rows:
- baseline:        an empty Python function with one argument, timed the same way;
- tactical:        `TacticalAssembler.on_bar` (FVG tracker included), one matrix per bar;
- strategic/5m:    `StrategicAssembler.on_bar` on every 5-minute bar (5 of 6 only aggregate);
- strategic/30m:   the same calls, only those that closed a 30-minute bar and built its matrix.
`x base` is each p50 over the baseline p50; bars/s is 1e9 / mean ns (for strategic/30m: 30-minute
bars per second of their own cost).

Run: .venv/bin/python bench/bench_matrices.py [--n 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from decimal import Decimal

import numpy as np

from himari.daemon.events import Bar
from himari.daemon.ids import IdSource
from himari.daemon.instruments import Instrument
from himari.daemon.matrices import strategic as strategic_mod
from himari.daemon.matrices.strategic import StrategicAssembler, StrategicConfig
from himari.daemon.matrices.tactical import TacticalAssembler, TacticalConfig

STEP_NS = 300 * 1_000_000_000
INST = Instrument(id="ES", tick_size=Decimal("0.25"))


def make_bars(n: int, seed: int) -> list[Bar]:
    """A random walk of 5-minute bars starting on a 30-minute boundary, prices in ticks."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 6.0, n).round().astype(np.int64)
    wick_up = rng.integers(0, 5, n)
    wick_dn = rng.integers(0, 5, n)
    vols = rng.integers(1, 1000, n)
    bars, close = [], 20_000
    for t in range(n):
        o = close
        close = max(100, o + int(steps[t]))
        hi = max(o, close) + int(wick_up[t])
        lo = max(1, min(o, close) - int(wick_dn[t]))
        bars.append(Bar(event_id=f"B{t}", ts_ns=(t + 1) * STEP_NS, instrument_id=INST.id, spec="5m",
                        ts_open=t * STEP_NS, ts_close=(t + 1) * STEP_NS, open=o, high=hi, low=lo,
                        close=close, volume=int(vols[t]), n_ticks=int(vols[t])))
    return bars


def _time(call: Callable[[Bar], object], bars: list[Bar]) -> tuple[np.ndarray, list[bool]]:
    out = np.empty(len(bars), dtype=np.int64)
    produced = []
    clock = time.perf_counter_ns
    for i, bar in enumerate(bars):
        t0 = clock()
        r = call(bar)
        out[i] = clock() - t0
        produced.append(r is not None)
    return out, produced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="5-minute bars")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    bars = make_bars(args.n, args.seed)
    strategic_mod.warmup()

    def empty(bar: Bar) -> None:
        return None

    def tactical() -> Callable[[Bar], object]:
        return TacticalAssembler(TacticalConfig(), INST, IdSource()).on_bar

    def strategic() -> Callable[[Bar], object]:
        return StrategicAssembler(StrategicConfig(), INST, IdSource()).on_bar

    settle = bars[: min(len(bars), 3_000)]
    rows: list[tuple[str, np.ndarray]] = []
    for name, make in (("baseline", lambda: empty), ("tactical", tactical),
                       ("strategic", strategic)):
        _time(make(), settle)  # caches, branch predictors, lazy imports
        ns, produced = _time(make(), bars)
        if name == "strategic":
            rows.append(("strategic/5m", ns))
            rows.append(("strategic/30m", ns[np.asarray(produced)]))
        else:
            rows.append((name, ns))

    base_p50 = float(np.percentile(rows[0][1], 50))
    print(f"matrix assemblers, {args.n:,} 5-minute bars (seed {args.seed}), "
          f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}")
    print(f"{'row':<14} {'calls':>7} {'p50 us':>8} {'p99 us':>8} {'mean us':>8} {'bars/s':>10} "
          f"{'x base':>7}")
    for name, ns in rows:
        p50, p99, mean = (float(np.percentile(ns, 50)), float(np.percentile(ns, 99)),
                          float(ns.mean()))
        print(f"{name:<14} {len(ns):7d} {p50 / 1e3:8.2f} {p99 / 1e3:8.2f} {mean / 1e3:8.2f} "
              f"{1e9 / mean:10,.0f} {p50 / base_p50:7.1f}")


if __name__ == "__main__":
    main()
