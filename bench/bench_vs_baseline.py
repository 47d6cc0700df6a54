"""Replay throughput against an earlier commit, side by side in one run.

Checks out BASELINE (default: the walking skeleton before the execution-boundary rework) into a
temporary git worktree, then runs `himari replay` on the same synthetic stream alternately with
the baseline code and with this checkout, R times each, in fresh processes. Reports the median
ticks/s (from ready to report written: the report's `ticks_per_second`), the ratio new/baseline,
and whether the fills are byte-identical and the order counts equal.

The baseline is imported from the worktree through a throw-away `himari` package of symlinks on
PYTHONPATH (ahead of this checkout's editable install), so no second install is needed.
Usage: python bench/bench_vs_baseline.py [--baseline REV] [--repeat R] [--ticks N] [--matrices]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "2cde01e"  # main before issue 12 (the walking skeleton, checked hard)

# The EMA cross, pinned: the baseline's default (the default is now the ensemble).
REFERENCE = ["--set", 'strategy.name="ema_cross"',
             "--set", "strategy.params.fast=10", "--set", "strategy.params.slow=20",
             "--set", "strategy.params.quantity=\"0.1\"", "--set", "feed.synthetic.lot_size=\"0.1\"",
             "--set", "strategy.params.bar_spec=\"250t\"", "--set", "replay.progress=false",
             "--set", "log.level=\"warning\""]


def baseline_tree(rev: str, tmp: Path) -> Path:
    tree = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev],
                   check=True)
    pkg = tmp / "pkgroot" / "himari"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").symlink_to(tree / "himari" / "__init__.py")
    for name, folder in (("daemon", "daemon"), ("strategies", "strategies"), ("brokers", "brokers")):
        (pkg / name).symlink_to(tree / folder)
    if (tree / "config").is_dir():
        (pkg / "config").symlink_to(tree / "config")
    return tmp / "pkgroot"


def replay(pythonpath: str | None, out: Path, extra: list[str]) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    else:
        env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "himari.daemon.cli", "replay", "--out", str(out), "--quiet",
           *REFERENCE, *extra]
    subprocess.run(cmd, check=True, env=env, cwd=str(out.parent))
    return json.loads((out / "report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default=DEFAULT_BASELINE)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--matrices", action="store_true", help="also run the feature matrices")
    args = ap.parse_args()
    extra = ["--set", f"feed.synthetic.n_ticks={args.ticks}",
             "--set", f"matrices.enabled={'true' if args.matrices else 'false'}"]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        try:
            base_path = str(baseline_tree(args.baseline, tmp))
            rates: dict[str, list[float]] = {"baseline": [], "this checkout": []}
            reps: dict[str, dict] = {}
            for i in range(args.repeat):
                for name, pp in (("baseline", base_path), ("this checkout", None)):
                    out = tmp / f"{name.replace(' ', '_')}-{i}"
                    rep = replay(pp, out, extra)
                    rates[name].append(rep["ticks_per_second"])
                    reps[name] = rep
            same_fills = ((tmp / "baseline-0" / "fills.csv").read_bytes()
                          == (tmp / "this_checkout-0" / "fills.csv").read_bytes())
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tmp / "baseline")], check=False)
    base = statistics.median(rates["baseline"])
    new = statistics.median(rates["this checkout"])
    print(f"replay throughput vs {args.baseline}: {args.ticks:,} synthetic ticks, EMA 10/20 on "
          f"250-tick bars, 0.1 size, matrices {'on' if args.matrices else 'off'}; median of "
          f"{args.repeat} alternating runs, ticks/s from ready to report written")
    for name, values in rates.items():
        print(f"  {name:<16}{statistics.median(values):>14,.0f}   runs: "
              + ", ".join(f"{v:,.0f}" for v in values))
    print(f"  ratio this/baseline: {new / base:.3f}")
    print(f"  orders: baseline {reps['baseline']['orders']}, this checkout "
          f"{reps['this checkout']['orders']}; fills byte-identical: {same_fills}")


if __name__ == "__main__":
    main()
