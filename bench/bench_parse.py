"""CSV parse speed against pyarrow's own CSV read of the same file (issue 15: within 2x).

Writes N rows of `ts_ns,price,size,side` (19-digit nanosecond epochs, a 0.25 price grid quoted
with two decimals, B/S/N sides; seeded) unless --csv names a file, then prints the median over
--repeat runs of:

- pyarrow: `pyarrow.csv.read_csv(path)` with its default inference (the baseline);
- himari parse: `open_file_feed` (sniff, typed read, exact times, sides, grid inference, checks);
- himari catalog read: the same feed read back from the data catalog's Parquet;

and the ratios to the baseline. With --compare-with OTHER_HIMARI (e.g. main's
/work/main/.venv/bin/himari) it also runs `himari replay` of the file and of the synthetic stream
with both executables in turn and prints each report's ticks_per_second, so a change in replay
speed shows in one run on the same machine state.

Usage: python bench/bench_parse.py [--rows 1000000] [--repeat 5] [--csv FILE]
                                   [--compare-with PATH] [--replays 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_csv(path: Path, rows: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    ts = 1_704_067_200_000_000_000 + np.cumsum(rng.integers(1, 1_000_000, rows))
    quarters = 160_000 + np.cumsum(rng.integers(-2, 3, rows))
    size = rng.integers(1, 50, rows)
    side = np.array(["B", "S", "N"])[rng.integers(0, 3, rows)]
    price = np.char.mod("%.2f", quarters / 4)
    body = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(
        ts.astype(str), ","), price), ","), np.char.add(size.astype(str), ",")), side)
    with path.open("w") as fh:
        fh.write("ts_ns,price,size,side\n")
        fh.write("\n".join(body.tolist()))
        fh.write("\n")


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def replay_tps(exe: str, args: list[str], cwd: Path, env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        # the EMA cross, pinned: the same strategy in both executables, whatever their default
        subprocess.run([exe, "replay", *args, "--out", out, "--quiet",
                        "--set", "log.level=warning", "--set", "replay.progress=false",
                        "--set", 'strategy.name="ema_cross"'],
                       check=True, cwd=cwd, env=env)
        return float(json.loads((Path(out) / "report.json").read_text())["ticks_per_second"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--compare-with", default=None, help="another himari executable")
    ap.add_argument("--replays", type=int, default=3)
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from himari.daemon import catalog
    from himari.daemon.feeds.config import FeedConfig
    from himari.daemon.feeds.files import open_file_feed

    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        path = args.csv or tmpd / "ticks.csv"
        if args.csv is None:
            write_csv(path, args.rows)
        cfg = FeedConfig(kind="file", catalog_dir=str(tmpd / "catalog"))
        pa.set_cpu_count(pa.cpu_count())
        open_file_feed(path, cfg, "X")  # load the numba cache, warm the page cache
        base = timed(lambda: pacsv.read_csv(path), args.repeat)
        parse = timed(lambda: open_file_feed(path, cfg, "X"), args.repeat)
        catalog.open_cached(path, cfg, "X")  # store
        read = timed(lambda: catalog.open_cached(path, cfg, "X"), args.repeat)
        feed = open_file_feed(path, cfg, "X")
        print(f"parse benchmark: {path.name}, {feed.stats.rows:,} rows, {path.stat().st_size / 1e6:.1f} MB, "
              f"median of {args.repeat}, {os.cpu_count()} CPUs")
        print(f"  pyarrow.csv.read_csv         {base * 1e3:8.1f} ms  (baseline)")
        print(f"  himari parse (open_file_feed) {parse * 1e3:7.1f} ms  ratio {parse / base:5.2f}x")
        print(f"  himari catalog read           {read * 1e3:7.1f} ms  ratio {read / base:5.2f}x")

        if args.compare_with:
            env = dict(os.environ, HIMARI_CATALOG_DIR=str(tmpd / "catalog-replays"))
            here = str(Path(sys.executable).with_name("himari"))
            for label, extra in ((f"file {path.name}", [str(path)]),
                                 ("synthetic 1M", [])):
                for exe in (args.compare_with, here):
                    tps = [replay_tps(exe, extra, tmpd, env) for _ in range(args.replays)]
                    print(f"  replay {label:24} {exe:45} ticks/s median {statistics.median(tps):>12,.0f} "
                          f"(runs: {', '.join(f'{x:,.0f}' for x in tps)})")


if __name__ == "__main__":
    main()
