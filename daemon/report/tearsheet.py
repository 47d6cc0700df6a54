"""`tearsheet.html`: one self-contained page (plotly.js inlined, works offline).

Sections, in order, each a `<section id=NAME>`; every chart is a figure whose JSON sits in a
`<script type="application/json" id="fig-NAME-json">` and is drawn into `<div id="fig-NAME">` by a
few lines of script (so a test can read exactly what the page draws):
  summary   the statistics (a table, no chart) and how they were computed
  equity    strategy equity against buy-and-hold of the same instrument, same starting cash
  drawdown  the underwater curve (equity / running peak - 1)
  price     the instrument's price at each bar close, every entry and exit marked
  rolling   rolling Sharpe: 20 daily returns, annualised; on a shorter replay a per-bar ratio,
            labelled as not annualised
  daily     daily returns;  monthly  monthly (compounded) returns
  trades    the round trips with the decision id of the fills that opened and closed each

plotly is imported here only, when the page is written, never by the replay itself. Long curves
are bucketed to at most MAX_POINTS points (equity: the last of each bucket; drawdown: the worst, so
the deepest fall survives); markers and table rows are capped, with a note (fills.csv has all).
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from himari.daemon.report import stats
from himari.daemon.report.trades import ENTRY, EXIT, REVERSE, FillMark, TradeRow

MAX_POINTS = 5_000
MAX_MARKERS = 10_000
MAX_TRADE_ROWS = 5_000
ROLLING_DAYS = 20
SECTIONS = ("summary", "equity", "drawdown", "price", "rolling", "daily", "monthly", "trades")
FIGURES = SECTIONS[1:]


@dataclass
class TearsheetInput:
    title: str
    instrument_id: str
    currency: str
    starting_cash: float
    tick_size: Decimal
    lot_size: Decimal
    ts_ns: np.ndarray  # int64, one per equity sample
    equity: np.ndarray  # float64
    price_ticks: np.ndarray  # int64, the instrument's mark at each sample (-1: none yet)
    marks: list[FillMark]  # every fill, classified
    trades: list[TradeRow]
    summary: dict[str, Any]  # label -> value (already formatted or a number)
    notes: list[str] = field(default_factory=list)


def bucket(values: np.ndarray, max_points: int, how: str) -> np.ndarray:
    """Indices that keep at most `max_points` points: per bucket the last ("last") or the
    smallest ("min") value; always the first and last index."""
    n = values.shape[0]
    if n <= max_points:
        return np.arange(n)
    edges = np.linspace(0, n, max_points + 1).astype(np.int64)
    if how == "last":
        idx = edges[1:] - 1
    else:
        edges = np.unique(edges)  # every bucket non-empty
        lows = np.minimum.reduceat(values, edges[:-1])
        which = np.repeat(np.arange(lows.shape[0]), np.diff(edges))
        hits = np.flatnonzero(values == lows[which])  # NaN-free input: each bucket has a hit
        _, first = np.unique(which[hits], return_index=True)
        idx = hits[first]
    return np.unique(np.concatenate(([0], idx, [n - 1])))


def _ms(ts_ns: np.ndarray) -> np.ndarray:
    """Epoch milliseconds as float64: plotly draws numbers on a date axis as ms since epoch."""
    return ts_ns.astype(np.float64) / 1e6


def _iso(ts_ns: int) -> str:
    return str(np.datetime64(int(ts_ns), "ns").astype("datetime64[ms]")).replace("T", " ")


def arr(a: np.ndarray) -> dict[str, str]:
    """A float64 array as plotly.js's typed-array spec (base64, little endian; NaN = a gap)."""
    return {"dtype": "f8", "bdata": base64.b64encode(
        np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")}


def decode(spec: Any) -> Any:
    """The inverse of `arr` (for readers and tests); plain lists pass through."""
    if isinstance(spec, dict) and "bdata" in spec:
        dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=dtype)
    return spec


def _fig(title: str, ytitle: str, traces: list[dict[str, Any]], *,
         xtype: str = "date") -> dict[str, Any]:
    grid = {"gridcolor": "#eeeeee", "zerolinecolor": "#cccccc"}
    return {"data": traces, "layout": {
        "title": {"text": title}, "height": 360, "paper_bgcolor": "white",
        "plot_bgcolor": "white", "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
        "legend": {"orientation": "h", "y": 1.12}, "hovermode": "closest",
        "xaxis": {"type": xtype, **grid}, "yaxis": {"title": {"text": ytitle}, **grid}}}


def _line(name: str, x: np.ndarray, y: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "name": name, "x": arr(x), "y": arr(y), **extra}


def figures(d: TearsheetInput) -> dict[str, dict[str, Any]]:
    """The figures by section, as plotly figure dicts (plain JSON: building them through
    plotly.graph_objects' validators took ~2 s a page)."""
    out: dict[str, dict[str, Any]] = {}
    ts, eq = d.ts_ns, d.equity
    keep = bucket(eq, MAX_POINTS, "last")
    price = np.where(d.price_ticks >= 0, d.price_ticks.astype(np.float64) * float(d.tick_size),
                     np.nan)

    traces = [_line("strategy", _ms(ts[keep]), eq[keep], line={"color": "#1f77b4"})]
    first = np.flatnonzero(np.isfinite(price) & (price > 0))
    if first.shape[0]:
        bh = d.starting_cash * price / price[first[0]]
        traces.append(_line(f"buy-and-hold {d.instrument_id}", _ms(ts[keep]), bh[keep],
                            line={"color": "#ff7f0e", "dash": "dot"}))
    out["equity"] = _fig(f"Equity ({d.currency}) against buy-and-hold of {d.instrument_id}, "
                         "same starting cash", d.currency, traces)

    peak = np.maximum.accumulate(eq) if eq.shape[0] else eq
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (eq / peak - 1.0) * 100.0, 0.0)
    low = bucket(dd, MAX_POINTS, "min")
    out["drawdown"] = _fig("Underwater: drawdown from the running peak", "drawdown %", [
        _line("drawdown", _ms(ts[low]), dd[low], fill="tozeroy", line={"color": "#d62728"})])

    traces = [_line("price", _ms(ts[keep]), price[keep], line={"color": "#7f7f7f"})]
    marks = [m for m in d.marks if m.instrument_id == d.instrument_id][:MAX_MARKERS]
    styles = {  # name: (kinds, side, marker symbol, colour)
        "long entry": ((ENTRY, REVERSE), 1, "triangle-up", "#2ca02c"),
        "short entry": ((ENTRY, REVERSE), -1, "triangle-down", "#d62728"),
        "exit (sell)": ((EXIT, REVERSE), -1, "x", "#1f77b4"),
        "exit (buy)": ((EXIT, REVERSE), 1, "x", "#9467bd"),
    }
    for name, (kinds, side, symbol, colour) in styles.items():
        sel = [m for m in marks if m.kind in kinds and m.side == side]
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{name} ({len(sel)})",
            "x": arr(_ms(np.array([m.ts_ns for m in sel], dtype=np.int64))),
            "y": arr(np.array([m.price for m in sel], dtype=np.float64) * float(d.tick_size)),
            "marker": {"symbol": symbol, "size": 9, "color": colour},
            "text": [f"{m.kind} {m.quantity} lots, decision {m.decision_id or '-'}" for m in sel],
            "hoverinfo": "x+y+text"})
    out["price"] = _fig(f"{d.instrument_id}: price at each bar close, entries and exits",
                        "price", traces)

    daily = stats.daily_returns(ts, eq, d.starting_cash)
    _, periods = stats.calendar_of(ts)
    r = np.nan_to_num(daily.returns)
    if r.shape[0] >= ROLLING_DAYS + 1:
        roll = stats.rolling_sharpe(r, ROLLING_DAYS, periods)
        out["rolling"] = _fig(
            f"Rolling Sharpe: {ROLLING_DAYS} daily returns, annualised sqrt({periods})", "Sharpe",
            [_line("rolling Sharpe", _ms(daily.day_ns), roll)])
    else:
        window = int(min(500, max(20, eq.shape[0] // 20)))
        bar_r = np.diff(eq) / d.starting_cash if eq.shape[0] > 1 else np.zeros(0)
        roll = stats.rolling_sharpe(bar_r, window, 1)
        k = bucket(np.nan_to_num(roll), MAX_POINTS, "last")
        out["rolling"] = _fig(
            f"Rolling per-bar Sharpe over {window} bars, NOT annualised (fewer than "
            f"{ROLLING_DAYS + 1} days of data)", "mean / std per bar",
            [_line("rolling per-bar Sharpe", _ms(ts[1:][k]), roll[k])])

    def bars(name: str, x: Any, y: np.ndarray) -> dict[str, Any]:
        colours = np.where(y >= 0, "#2ca02c", "#d62728").tolist()
        return {"type": "bar", "name": name, "x": x, "y": arr(y * 100.0),
                "marker": {"color": colours}}

    out["daily"] = _fig("Daily returns (UTC days)", "return %",
                        [bars("daily return", arr(_ms(daily.day_ns)), r)])
    months, mret = stats.monthly_returns(daily)
    out["monthly"] = _fig("Monthly returns (compounded daily)", "return %",
                          [bars("monthly return", months, mret)], xtype="category")

    rows = d.trades[:MAX_TRADE_ROWS]
    cols = {"#": [str(i + 1) for i in range(len(rows))],
            "instrument": [t.instrument_id for t in rows],
            "side": ["long" if t.direction > 0 else "short" for t in rows],
            "quantity": [format(d.lot_size * t.quantity, "f") for t in rows],
            "opened (UTC)": [_iso(t.ts_open) for t in rows],
            "closed (UTC)": [_iso(t.ts_close) for t in rows],
            "entry price": [format(t.entry_price, "f") for t in rows],
            "exit price": [format(t.exit_price, "f") for t in rows],
            "net pnl": [format(t.net_pnl, "f") for t in rows],
            "fills": [str(t.fills) for t in rows],
            "entry decision": [t.entry_decision_id or "-" for t in rows],
            "exit decision": [t.exit_decision_id or "-" for t in rows]}
    shown = f"{len(rows)} of {len(d.trades)}" if len(rows) < len(d.trades) else f"{len(rows)}"
    out["trades"] = {"data": [{
        "type": "table",
        "header": {"values": list(cols), "align": "left", "fill": {"color": "#eeeeee"}},
        "cells": {"values": list(cols.values()), "align": "left"}}],
        "layout": {"title": {"text": f"Round trips ({shown}; every fill is in fills.csv)"},
                   "height": max(300, min(900, 120 + 26 * len(rows))),
                   "margin": {"l": 10, "r": 10, "t": 50, "b": 10}}}
    return out


_SCRIPT = """
for (const name of %s) {
  const spec = JSON.parse(document.getElementById("fig-" + name + "-json").textContent);
  Plotly.newPlot("fig-" + name, spec.data, spec.layout, {responsive: true, displaylogo: false});
}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:,.4f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def render(d: TearsheetInput, figs: dict[str, dict[str, Any]], plotly_js: str) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in d.summary.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in d.notes)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(d.title)}</title>",
        "<style>body{font-family:sans-serif;margin:16px;max-width:1200px}"
        "table.stats th{text-align:left;padding-right:16px;font-weight:normal;color:#555}"
        "section{margin-bottom:24px}</style>",
        f"<script>{plotly_js}</script></head><body>",
        f"<h2>{html.escape(d.title)}</h2>",
        f"<section id='summary'><h3>Summary</h3><table class='stats'>{rows}</table>"
        f"<ul class='notes'>{notes}</ul></section>",
    ]
    for name in FIGURES:
        spec = orjson.dumps(figs[name]).decode("utf-8").replace("</", "<\\/")
        parts.append(f"<section id='{name}'><div id='fig-{name}' class='figure'></div>"
                     f"<script type='application/json' id='fig-{name}-json'>{spec}</script>"
                     "</section>")
    parts.append(f"<script>{_SCRIPT % json.dumps(list(FIGURES))}</script></body></html>\n")
    return "".join(parts)


def plotly_js() -> str:
    """plotly.js as plotly (the Python package) ships it, read without importing the package
    (its import costs ~0.3 s and is not needed to inline one file)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tearsheet.html needs the plotly package (pip install plotly)")
    return (Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js").read_text(
        encoding="utf-8")


def write_tearsheet(path: Path, d: TearsheetInput) -> None:
    from himari.daemon.report.writers import atomic_write

    page = render(d, figures(d), plotly_js())
    atomic_write(path, page.encode("utf-8"))


def tearsheet_input(session: Any, report: dict[str, Any]) -> TearsheetInput:
    """What the page shows, read from a finished session and its report."""
    from himari.daemon.report.trades import classify_fills, trade_rows

    inst = session.instrument
    curve = session.portfolio.curve
    ts, eq, _ = curve.arrays()
    marks = classify_fills(session.fills)
    trades = trade_rows(marks, session.cache.positions.round_trips)
    perf = report.get("performance", {})
    period = f"{_iso(int(ts[0]))} to {_iso(int(ts[-1]))} UTC" if ts.shape[0] else "no bars"

    def pct(v: Any) -> Any:
        return None if v is None else f"{100 * v:,.4f} %"

    summary: dict[str, Any] = {
        "strategy": report.get("strategy", {}).get("name", ""),
        "instrument": ", ".join(session.instruments),
        "period": period,
        "ticks": report.get("ticks"), "bars": report.get("bars"),
        "fills": report.get("fills"), "round trips": report.get("round_trips"),
        f"net pnl ({session.portfolio.currency})": report.get("pnl"),
        f"fees ({session.portfolio.currency})": report.get("fees"),
        "total return": pct(perf.get("total_return")),
        f"buy-and-hold return ({inst.id})": pct(perf.get("buy_and_hold_return")),
        "max drawdown (per bar)": f"{report.get('max_drawdown_pct', 0.0):,.4f} %",
        "Sharpe (daily, annualised)": (report.get("sharpe") if report.get("sharpe") is not None
                                       else "insufficient data"),
        "Sortino": perf.get("sortino"), "Calmar": perf.get("calmar"),
        "annual return": pct(perf.get("annual_return")),
        "annual volatility": pct(perf.get("annual_volatility")),
        "daily returns": perf.get("daily_returns"),
        "calendar": (f"{perf.get('calendar', '')} "
                     f"({perf.get('periods_per_year', '')} periods a year)"),
        "win rate": pct(report.get("win_rate")), "exposure": pct(report.get("exposure")),
    }
    notes = [str(report.get("sharpe_note", "")),
             "calendar: 24/7 (sqrt(365)) when the data trades on Saturdays (UTC), else market "
             "sessions (sqrt(252)); daily returns are cut at UTC midnight",
             "buy-and-hold: the starting cash in the instrument at the first bar close, no fees"]
    if len(session.instruments) > 1:
        notes.append(f"several instruments: price, entries/exits and buy-and-hold show {inst.id}")
    if eq.shape[0] > MAX_POINTS:
        notes.append(f"{eq.shape[0]:,} equity samples drawn as {MAX_POINTS:,} buckets (last value;"
                     " drawdown: the worst of each bucket)")
    return TearsheetInput(
        title=f"himari tearsheet: {session.cfg.strategy.name} on {', '.join(session.instruments)}",
        instrument_id=inst.id, currency=session.portfolio.currency,
        starting_cash=float(session.cfg.account.starting_cash), tick_size=inst.tick_size,
        lot_size=inst.lot_size, ts_ns=ts, equity=eq, price_ticks=curve.prices(), marks=marks,
        trades=trades, summary=summary, notes=notes)
