"""Peak memory and speed of whole replays as the data grows: bounded memory, flat ticks/s.

For each size N (default 1M, 5M and 50M ticks) the bench writes a CSV of `ts_ns,price,size,side`
(N trades of the seeded synthetic stream, generated and written block by block into a temporary
directory; 50M rows are about 1.6 GB), then runs `himari replay` (the EMA cross of the issue's
reference, the full report and tearsheet) in a fresh child process per run and reads the child's own peak RSS
(getrusage ru_maxrss) and the report's ticks/s:

(By default a replay reads files under 64 MiB at once, the fastest way for a small file; the bench
streams every size so that the rows compare like with like.)

- `csv`: the CSV streamed, catalog off (each replay parses it: an opening pass, then the replay);
- `csv+store`: the first replay through the catalog (parsed once, stored block by block);
- `catalog`: the second replay (the stored Parquet read by record batches);
- `synthetic`: the built-in synthetic stream itself at N ticks (no file);
- `csv-whole`: the CSV read whole (the pre-streaming path, `BLOCK_BYTES = 0`), only for N up to
  `--whole-max` (it needs memory in proportion to N).

Usage: python bench/bench_memory.py [--sizes 1000000,5000000,50000000] [--dir DIR] [--keep]
       [--whole-max 5000000] [--modes csv,csv+store,catalog,synthetic,csv-whole]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("csv", "csv+store", "catalog", "synthetic", "csv-whole")


def write_csv(path: Path, n: int) -> float:
    """N synthetic trades as CSV, one chunk at a time (never the whole file in memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    from himari.daemon.feeds.config import FeedConfig, SyntheticConfig
    from himari.daemon.feeds.synthetic import SyntheticFeed

    t0 = time.perf_counter()
    feed = SyntheticFeed(FeedConfig(synthetic=SyntheticConfig(n_ticks=n)))
    tick = float(feed.instrument.tick_size)
    codes = pa.array(["S", "N", "B"])
    schema = pa.schema([("ts_ns", pa.int64()), ("price", pa.float64()), ("size", pa.int64()),
                        ("side", pa.string())])
    with pacsv.CSVWriter(path, schema) as w:
        for ch in feed.chunks(quotes=False, size=1 << 20):
            side = pc.take(codes, pa.array(np.asarray(ch.side, dtype=np.int64) + 1))
            # ticks * 0.01 printed shortest-round-trip: "100.25", the exact decimal
            price = np.round(np.asarray(ch.price, dtype=np.float64) * tick, 10)
            w.write_table(pa.table([pa.array(ch.ts_ns), pa.array(price), pa.array(ch.size), side],
                                   schema=schema))
    return time.perf_counter() - t0


def child(mode: str, n: int, data: str, out: str) -> None:
    """One replay in this (fresh) process; prints one JSON line with its figures."""
    t0 = time.perf_counter()
    from himari.daemon.cli import main
    from himari.daemon.feeds import files

    args = ["replay", "--out", out, "--quiet", "--set", "log.level=warning",
            "--set", "replay.progress=false", "--set", 'strategy.name="ema_cross"']
    if mode == "synthetic":
        args += ["--set", f"feed.synthetic.n_ticks={n}"]
    else:
        args.insert(1, data)
    if mode in ("csv", "csv-whole"):
        args += ["--set", "feed.catalog=false"]
    if mode == "csv-whole":
        files.BLOCK_BYTES = 0
    else:  # stream every size (by default files under files.STREAM_ABOVE are read at once)
        files.STREAM_ABOVE = 0
    code = main(args)
    wall = time.perf_counter() - t0
    rep = json.loads((Path(out) / "report.json").read_text()) if code == 0 else {}
    print(json.dumps({"mode": mode, "n": n, "code": code, "wall_s": round(wall, 2),
                      "ticks": rep.get("ticks"), "tps": rep.get("ticks_per_second"),
                      "tps_all": rep.get("ticks_per_second_with_startup"),
                      "catalog": (rep.get("inputs") or [{}])[0].get("catalog", ""),
                      "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def run_child(mode: str, n: int, data: Path, out: Path, env: dict[str, str]) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", mode, str(n), str(data), str(out)],
                         capture_output=True, text=True, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"mode": mode, "n": n, "code": res.returncode, "error": res.stderr[-400:]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,5000000,50000000")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--whole-max", type=int, default=5_000_000)
    ap.add_argument("--dir", default="")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child", nargs=4)
    a = ap.parse_args()
    if a.child:
        mode, n, data, out = a.child
        child(mode, int(n), data, out)
        return
    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="himari-bench-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HIMARI_CATALOG_DIR=str(root / "catalog"))
    modes = [m for m in a.modes.split(",") if m]
    rows = []
    try:
        for n in (int(s) for s in a.sizes.split(",")):
            data = root / f"trades-{n}.csv"
            needs_csv = any(m != "synthetic" for m in modes)
            if needs_csv and not data.exists():
                secs = write_csv(data, n)
                print(f"wrote {data.name}: {data.stat().st_size / 2**20:,.0f} MiB in {secs:.1f} s",
                      flush=True)
            for mode in modes:
                if mode == "csv-whole" and n > a.whole_max:
                    continue
                r = run_child(mode, n, data, root / f"out-{mode}-{n}", env)
                r["csv_mib"] = round(data.stat().st_size / 2**20) if data.exists() else 0
                rows.append(r)
                print(json.dumps(r), flush=True)
            if not a.keep:
                data.unlink(missing_ok=True)
                shutil.rmtree(root / "catalog", ignore_errors=True)
    finally:
        if not a.keep and not a.dir:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"{'ticks':>12} {'mode':<10} {'csv MiB':>8} {'peak RSS MiB':>13} {'ticks/s':>13} "
          f"{'ticks/s incl. start':>20} {'wall s':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['n']:>12,} {r['mode']:<10} FAILED (exit {r['code']}): {r['error'][-200:]}")
            continue
        print(f"{r['n']:>12,} {r['mode']:<10} {r['csv_mib']:>8,} {r['rss_mib']:>13,.0f} "
              f"{r['tps'] or 0:>13,.0f} {r['tps_all'] or 0:>20,.0f} {r['wall_s']:>8.1f}")


if __name__ == "__main__":
    main()
