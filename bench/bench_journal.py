"""Cost of one journal write (a Fill record, ~330 bytes): the framing (CRC-32 over the JSON) and
the two durability policies.

- encode:      `encode_record` alone (typed JSON + CRC-32 framing), no I/O;
- no_fsync:    `Journal.write` with fsync=False: one unbuffered write(2); survives SIGKILL;
- fsync:       `Journal.write` with fsync=True: write(2) + fsync(2); survives power loss.
The baseline is `typed_line` (the JSON without the checksum) in the same process; `x base` is each
p50 over the baseline p50. Each call is timed alone with `time.perf_counter_ns`.

Run: .venv/bin/python bench/bench_journal.py [--n 20000] [--n-fsync 2000] [--dir DIR]
(`--dir` on the disk the state directory will live on: fsync cost is the disk's.)
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import numpy as np

from himari.daemon.events import Fill
from himari.daemon.jsonl import typed_line
from himari.daemon.orders.journal import Journal, encode_record

FILL = Fill(event_id="E-mx2w7kyw-123456", ts_ns=1_704_153_646_266_552_935,
            fill_id="F-mx2w7kyw-4567", order_id="O-mx2w7kyw-4567",
            client_order_id="C-mx2w7kyw-4567", instrument_id="ES", side=-1, quantity=3,
            price=20_125, fee=Decimal("1.425"), decision_id="D-mx2w7kyw-999", exec_id="X-1")


def _time(fn: Callable[[], object], n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out / 1000.0  # us


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--n-fsync", type=int, default=2_000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        rows: dict[str, np.ndarray] = {"baseline typed_line": _time(lambda: typed_line(FILL), args.n),
                                       "encode": _time(lambda: encode_record(FILL), args.n)}
        with Journal(Path(d) / "a.jsonl", fsync=False) as j:
            rows["no_fsync"] = _time(lambda: j.write(FILL), args.n)
        with Journal(Path(d) / "b.jsonl", fsync=True) as j:
            rows["fsync"] = _time(lambda: j.write(FILL), args.n_fsync)
    base = float(np.percentile(rows["baseline typed_line"], 50))
    print(f"journal write latency (us), {platform.python_implementation()} "
          f"{platform.python_version()}, {len(encode_record(FILL))} bytes per record")
    print(f"  {'case':<22}{'p50':>10}{'p99':>10}{'x base':>10}{'n':>8}")
    for name, us in rows.items():
        p50, p99 = np.percentile(us, [50, 99])
        print(f"  {name:<22}{p50:>10.2f}{p99:>10.2f}{p50 / base:>10.1f}{us.shape[0]:>8}")


if __name__ == "__main__":
    main()
