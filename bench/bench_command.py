"""The whole `himari replay` command, as the user feels it, against pyarrow's CSV read (issue 15).

The reference stream is bench_vs_baseline's: the built-in synthetic stream (1,000,000 ticks by
default, lot 0.1), EMA 10/20 on 250-tick bars, 0.1 size, matrices off. It is written once as a
CSV (`ts_ns,price,size,side`: exact nanoseconds, two-decimal prices, B/S sides) so the same ticks
can be replayed from a file. Each figure is the p50 (and min) over --repeat fresh processes, the
cases interleaved so a change in the machine's load hits them alike:

- pyarrow baseline: `python -c "import pyarrow.csv; pyarrow.csv.read_csv(FILE)"`;
- replay CSV, first run: an empty data catalog (parse, then store the Parquet copy);
- replay CSV, catalog: the second run of the same file, read from the catalog's Parquet;
- replay synthetic: no input file (the issue's reference command).

For each replay it also prints the report's own split (start-up to ready, the loop, ticks/s of
the loop) and the CPU seconds (user + sys) of the process, steadier than wall time on a loaded
machine. Bytecode: every process uses one fresh PYTHONPYCACHEPREFIX, filled by the untimed
warm-up round, as a regular install's compiled modules would be (an editable install under
PYTHONDONTWRITEBYTECODE=1 recompiles every module of himari on each start: --no-bytecode measures
that). --compare-with OTHER_HIMARI (e.g. /work/main/.venv/bin/himari) adds the replay cases run by
that executable, interleaved with this checkout's, so both are measured under the same load.

Usage: python bench/bench_command.py [--ticks 1000000] [--repeat 7] [--no-bytecode]
                                     [--compare-with PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ["--set", "strategy.name=\"ema_cross\"",
             "--set", "strategy.params.fast=10", "--set", "strategy.params.slow=20",
             "--set", "strategy.params.quantity=\"0.1\"", "--set", "strategy.params.bar_spec=\"250t\"",
             "--set", "replay.progress=false", "--set", "log.level=\"warning\"",
             "--set", "matrices.enabled=false"]
LOT = "0.1"


def write_reference_csv(path: Path, n_ticks: int) -> None:
    """The synthetic reference stream (lot 0.1, tick 0.01), every tick, as a CSV."""
    import msgspec

    from himari.daemon.feeds.config import FeedConfig, SyntheticConfig
    from himari.daemon.feeds.synthetic import SyntheticFeed

    cfg = FeedConfig(synthetic=msgspec.structs.replace(SyntheticConfig(), n_ticks=n_ticks,
                                                       lot_size=LOT))
    ticks = SyntheticFeed(cfg).arrays()
    cents = ticks.price.astype(np.int64)  # tick 0.01: integer ticks are cents
    lots = ticks.size.astype(np.int64)
    side = np.where(ticks.side > 0, "B", np.where(ticks.side < 0, "S", "N"))
    with path.open("w") as fh:
        fh.write("ts_ns,price,size,side\n")
        step = 200_000
        for i in range(0, len(cents), step):
            j = i + step
            rows = [f"{t},{c // 100}.{c % 100:02d},{q // 10}.{q % 10},{s}"
                    for t, c, q, s in zip(ticks.ts_ns[i:j].tolist(), cents[i:j].tolist(),
                                          lots[i:j].tolist(), side[i:j].tolist())]
            fh.write("\n".join(rows))
            fh.write("\n")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process."""
    c0 = _children_cpu()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=str(cwd))
    return time.perf_counter() - t0, _children_cpu() - c0


def himari_exe() -> list[str]:
    script = Path(sys.executable).with_name("himari")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "himari.daemon.cli"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-bytecode", action="store_true",
                    help="no bytecode cache (PYTHONDONTWRITEBYTECODE=1): every module compiled on each start")
    ap.add_argument("--compare-with", default=None, help="another himari executable")
    args = ap.parse_args()
    exes = {"": himari_exe()}
    if args.compare_with:
        exes[f" [{args.compare_with}]"] = [args.compare_with]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        csv = tmp / "reference.csv"
        write_reference_csv(csv, args.ticks)
        env = dict(os.environ, PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
        env.pop("PYTHONPATH", None)
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        base_cmd = [sys.executable, "-c", f"import pyarrow.csv; pyarrow.csv.read_csv({str(csv)!r})"]
        # name -> (command, catalog: None / "fresh" (empty, per run) / a directory kept warm)
        cases: dict[str, tuple[list[str], str | None]] = {
            "pyarrow baseline (import + read_csv)": (base_cmd, None)}
        for tag, exe in exes.items():
            cases[f"replay CSV, first run{tag}"] = ([*exe, "replay", str(csv)], "fresh")
            cases[f"replay CSV, catalog{tag}"] = ([*exe, "replay", str(csv)],
                                                  str(tmp / f"cat-warm{len(cases)}"))
            cases[f"replay synthetic{tag}"] = (
                [*exe, "replay", "--set", f"feed.synthetic.n_ticks={args.ticks}",
                 "--set", f"feed.synthetic.lot_size=\"{LOT}\""], None)
        wall: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        reports: dict[str, list[dict]] = {k: [] for k in cases}
        for i in range(args.repeat + 1):  # round 0 warms the page, bytecode and kernel caches
            for k, (name, (cmd, catalog)) in enumerate(cases.items()):
                run_env = dict(env)
                full = list(cmd)
                out = tmp / f"out-{i}-{k}"
                if catalog == "fresh":
                    run_env["HIMARI_CATALOG_DIR"] = str(tmp / f"cat-fresh-{i}-{k}")
                elif catalog is not None:
                    run_env["HIMARI_CATALOG_DIR"] = catalog
                if cmd is not base_cmd:
                    full += ["--out", str(out), "--quiet", *REFERENCE]
                w, c = timed(full, run_env, tmp)
                if i == 0:
                    continue
                wall[name].append(w)
                cpu[name].append(c)
                if cmd is not base_cmd:
                    reports[name].append(json.loads((out / "report.json").read_text()))
    base = statistics.median(wall["pyarrow baseline (import + read_csv)"])
    base_cpu = statistics.median(cpu["pyarrow baseline (import + read_csv)"])
    load = os.getloadavg()
    width = max(map(len, cases))
    print(f"whole-command benchmark: {args.ticks:,} ticks (the synthetic reference stream, lot "
          f"{LOT}), EMA 10/20 on 250-tick bars, matrices off; p50 and min of {args.repeat} fresh "
          f"processes per case, interleaved; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; bytecode "
          f"{'never cached (PYTHONDONTWRITEBYTECODE=1)' if args.no_bytecode else 'cached'}")
    print(f"  {'case':{width}} {'wall p50':>9} {'min':>7} {'ratio':>6} {'cpu p50':>8} {'ratio':>6}"
          f"  report: startup / loop s, loop ticks/s")
    for name in cases:
        w50, c50 = statistics.median(wall[name]), statistics.median(cpu[name])
        line = (f"  {name:{width}} {w50:8.3f}s {min(wall[name]):6.3f}s {w50 / base:5.2f}x "
                f"{c50:7.3f}s {c50 / base_cpu:5.2f}x")
        if reports[name]:
            su = statistics.median(r["seconds"]["startup"] for r in reports[name])
            lo = statistics.median(r["seconds"]["loop"] for r in reports[name])
            tps = statistics.median(r["ticks_per_second"] for r in reports[name])
            line += f"  {su:.3f} / {lo:.3f}, {tps:,.0f}"
        print(line)


if __name__ == "__main__":
    main()
