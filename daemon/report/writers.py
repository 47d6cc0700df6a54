"""Report files: `report.json`, `fills.csv` and a self-contained `equity.html` chart.

Every file is written atomically: to a temporary file in the same directory, flushed, then
`os.replace`d over the name, so a reader (or a crash) sees the old file or the new one, never half
of one. `set_aside_previous(out_dir)` runs before a run writes anything: the files an earlier run
left there under our names move into `out_dir/previous/`, so nothing stale sits beside the new
report as if it belonged to it (other files in the directory are never touched).
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from himari.daemon.events import Fill
from himari.daemon.instruments import Instrument

FILLS_COLUMNS = ["ts_ns", "fill_id", "order_id", "client_order_id", "instrument", "side", "quantity",
                 "price", "fee", "decision_id"]


def money(x: Decimal) -> str:
    """Fixed-point text for exact amounts (never exponent notation such as 0E-8)."""
    return format(x, "f")


ARTIFACT_NAMES = ("report.json", "fills.csv", "equity.csv", "equity.html", "equity.png",
                  "decisions.jsonl", "journal.jsonl")
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


def write_equity_html(path: Path, ts_ns: np.ndarray, equity: np.ndarray, title: str) -> None:
    """A dependency-free SVG line chart of equity against time, inside one HTML file."""
    width, height, pad = 960, 360, 50
    body: str
    if equity.shape[0] < 2:
        body = "<p>Fewer than two equity samples: nothing to draw.</p>"
    else:
        step = max(1, equity.shape[0] // 4000)  # keep the file small on long replays
        x = ts_ns[::step].astype(np.float64)
        y = equity[::step].astype(np.float64)
        x0, x1 = float(x[0]), float(x[-1]) if x[-1] > x[0] else float(x[0]) + 1.0
        y0, y1 = float(y.min()), float(y.max())
        if y1 == y0:
            y0, y1 = y0 - 1.0, y1 + 1.0
        px = pad + (x - x0) / (x1 - x0) * (width - 2 * pad)
        py = height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
        body = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
            f'<text x="{pad}" y="{pad - 10}" font-size="12">max {y1:,.2f}</text>'
            f'<text x="{pad}" y="{height - pad + 20}" font-size="12">min {y0:,.2f}</text>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>'
            "</svg>")
    atomic_write(path, (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h3>{html.escape(title)}</h3>{body}</body></html>\n").encode("utf-8"))
