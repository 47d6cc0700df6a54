"""Report files: `report.json` and `fills.csv` (`tearsheet.html` is `tearsheet.py`'s).

Every file is written atomically: to a temporary file in the same directory, flushed, then
`os.replace`d over the name, so a reader (or a crash) sees the old file or the new one, never half
of one. `set_aside_previous(out_dir)` runs before a run writes anything: the files an earlier run
left there under our names move into `out_dir/previous/`, so nothing stale sits beside the new
report as if it belonged to it (other files in the directory are never touched).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from himari.daemon.events import Fill
from himari.daemon.instruments import Instrument

FILLS_COLUMNS = ["ts_ns", "fill_id", "order_id", "client_order_id", "instrument", "side", "quantity",
                 "price", "fee", "decision_id"]


def money(x: Decimal) -> str:
    """Fixed-point text for exact amounts (never exponent notation such as 0E-8)."""
    return format(x, "f")


# equity.html / equity.png: what earlier versions wrote; still set aside so they never sit stale
ARTIFACT_NAMES = ("report.json", "fills.csv", "equity.csv", "tearsheet.html", "equity.html",
                  "equity.png", "decisions.jsonl", "journal.jsonl")
PREVIOUS_DIR = "previous"


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[io.BufferedWriter]:
    """A binary file that appears at `path` only when the block ends without an exception."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            yield fh
        # No fsync: the rename makes it atomic for readers and against a crash of this process;
        # a report can be rebuilt, and an fsync per file would slow every short replay.
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_writer(path) as fh:
        fh.write(data)


def set_aside_previous(out_dir: Path, keep: tuple[str, ...] = ()) -> list[str]:
    """Move the artifacts of an earlier run (our file names only, except `keep`) into
    `out_dir/previous/`, replacing what an older run left there, and drop our temporary files.
    Returns the names moved."""
    moved: list[str] = []
    if not out_dir.is_dir():
        return moved
    for tmp in out_dir.glob(".*.tmp-*"):
        if tmp.name[1:].split(".tmp-")[0] in ARTIFACT_NAMES:
            tmp.unlink(missing_ok=True)  # a write a crash interrupted
    for name in ARTIFACT_NAMES:
        src = out_dir / name
        if name in keep or not src.is_file():
            continue
        prev = out_dir / PREVIOUS_DIR
        prev.mkdir(exist_ok=True)
        os.replace(src, prev / name)
        moved.append(name)
    return moved


def write_json(path: Path, report: dict[str, Any]) -> None:
    atomic_write(path, orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                 + b"\n")


def write_fills_csv(path: Path, fills: list[Fill], instruments: dict[str, Instrument]) -> None:
    """Quantities and prices in instrument units (exact decimals), side BUY/SELL."""
    fh = io.StringIO(newline="")
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(FILLS_COLUMNS)
    for f in fills:
        inst = instruments[f.instrument_id]
        w.writerow([f.ts_ns, f.fill_id, f.order_id, f.client_order_id, f.instrument_id,
                    "BUY" if f.side > 0 else "SELL", money(inst.lots_to_qty(f.quantity)),
                    money(inst.ticks_to_price(f.price)), money(f.fee), f.decision_id])
    atomic_write(path, fh.getvalue().encode("utf-8"))
