"""Report files: `report.json`, `fills.csv` and a self-contained `equity.html` chart."""

from __future__ import annotations

import csv
import html
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


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def write_fills_csv(path: Path, fills: list[Fill], instruments: dict[str, Instrument]) -> None:
    """Quantities and prices in instrument units (exact decimals), side BUY/SELL."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(FILLS_COLUMNS)
        for f in fills:
            inst = instruments[f.instrument_id]
            w.writerow([f.ts_ns, f.fill_id, f.order_id, f.client_order_id, f.instrument_id,
                        "BUY" if f.side > 0 else "SELL", money(inst.lots_to_qty(f.quantity)),
                        money(inst.ticks_to_price(f.price)), money(f.fee), f.decision_id])


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
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h3>{html.escape(title)}</h3>{body}</body></html>\n")
