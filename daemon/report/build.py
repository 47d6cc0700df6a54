"""Assemble a replay's report (the contract in DESIGN.md) and write its files."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from himari import __version__
from himari.daemon.report import metrics, stats
from himari.daemon.report.writers import atomic_write, money, write_fills_csv, write_json

TEARSHEET_NAME = "tearsheet.html"

if TYPE_CHECKING:
    from himari.daemon.runners.replay import ReplaySession as Session


def build_report(session: "Session", files: dict[str, str], *, startup_seconds: float,
                 loop_seconds: float, replay_seconds: float) -> dict[str, Any]:
    """`replay_seconds` runs from ready (kernels compiled) until fills.csv is written: the
    throughput figure (the tearsheet is written after it, see `write_tearsheet`).
    `startup_seconds` is config to ready."""
    inst = session.instrument
    book = session.cache.positions
    portfolio = session.portfolio
    ts, eq, pos = portfolio.curve.arrays()
    cash0 = session.cfg.account.starting_cash
    realized = portfolio.realized_pnl()  # in the account currency
    unrealized = portfolio.unrealized_pnl()
    fees = portfolio.fees()
    dd_money, dd_frac = metrics.max_drawdown(eq)
    perf = performance_block(ts, eq, float(cash0), portfolio.curve.prices())
    trips = book.round_trips
    ticks = session.loop.ticks
    bar_counts = {b.spec.text: b.bars_closed for b in session.loop.builders}
    dropped = {b.spec.text: {"partial_first": b.partial_first_dropped,
                             "incomplete_last": b.incomplete_last_dropped}
               for b in session.loop.builders}
    stages = session.timer.summary()
    om_stats = getattr(session.om, "stats", None)
    matrices = session.matrices
    report: dict[str, Any] = {
        "himari_version": __version__,
        "files": files,
        "inputs": session.source.describe(),
        "instrument": _instrument(inst),
        "instruments": {i.id: {**_instrument(i), "position_lots": book.quantity(i.id),
                               "fx_rate": str(portfolio.rates[i.id]),
                               "realized_pnl": money(book.realized_pnl(i.id)),
                               "fees": money(book.fees(i.id))}
                        for i in session.instruments.values()},
        "account_currency": portfolio.currency,
        "strategy": {"name": session.cfg.strategy.name, "bar_spec": session.primary_spec,
                     "instances": [s.strategy_id for s in session.strategies],
                     "decisions": sum(s.decisions for s in session.strategies),
                     "intents": sum(s.intents for s in session.strategies),
                     "refused_by_risk": sum(s.refused for s in session.strategies),
                     # a strategy's own figures (the ensemble: agents used, guard counters)
                     **({"details": [s.report() for s in session.strategies]}
                        if hasattr(session.strategies[0], "report") else {})},
        "ticks": ticks,
        "batches": session.loop.batches,
        "bars": sum(bar_counts.values()),
        "bars_by_spec": bar_counts,
        "bars_dropped": dropped,
        "decisions": sum(s.decisions for s in session.strategies),
        "orders": int(session.bus.published.get("OrderSubmitted", 0)),
        "orders_rejected_by_risk": sum(sum(r.rejected.values()) for r in session.risks.values())
        + sum(session.core.risk.rejected.values()),
        "orders_rejected_by_venue": int(session.bus.published.get("OrderRejected", 0)),
        "fills": len(session.fills),
        "round_trips": len(trips),
        "malformed_rows": session.source.malformed(),
        "starting_cash": money(cash0),
        "pnl": money(realized + unrealized - fees),
        "pnl_gross": money(realized + unrealized),
        "realized_pnl": money(realized),
        "unrealized_pnl": money(unrealized),
        "fees": money(fees),
        "final_position_lots": session.cache.position(inst.id),
        "sharpe": perf["sharpe"],  # None (JSON null) on fewer than 20 daily returns
        "sharpe_note": perf["sharpe_note"],
        "performance": perf,
        "max_drawdown": round(dd_money, 6),
        "max_drawdown_pct": round(100 * dd_frac, 6),
        "win_rate": round(metrics.win_rate([t.net_pnl for t in trips]), 6),
        "exposure": round(metrics.exposure(pos), 6),
        "ticks_per_second": round(ticks / replay_seconds, 1) if replay_seconds > 0 else 0.0,
        "ticks_per_second_with_startup": (round(ticks / (replay_seconds + startup_seconds), 1)
                                          if replay_seconds + startup_seconds > 0 else 0.0),
        "seconds": {"startup": round(startup_seconds, 4), "loop": round(loop_seconds, 4),
                    "replay_to_report": round(replay_seconds, 4)},
        "throughput_note": ("ticks_per_second = ticks / seconds.replay_to_report: from ready "
                            "(config read, kernels compiled) through the feed, every stage, "
                            "fills.csv and equity.csv; ticks_per_second_with_startup adds the "
                            "start-up; the tearsheet is written after (seconds.tearsheet)"),
        "stage_latency_us": stages,
        "stage_latency_note": ("bars and venue_match: per batch (items = ticks); handlers: per "
                               "event, inclusive of the handlers they publish to synchronously"),
        "risk": session.risk.snapshot(),
        "bus": {"published": dict(session.bus.published),
                "handler_errors": dict(session.bus.handler_errors),
                "queues": session.bus.queue_stats()},
    }
    if om_stats is not None:
        report["order_manager"] = _plain(om_stats() if callable(om_stats) else om_stats)
    if matrices is not None:
        report["matrices"] = _plain(getattr(matrices, "stats", lambda: {})()
                                    if callable(getattr(matrices, "stats", None)) else {})
    return report


def performance_block(ts: np.ndarray, eq: np.ndarray, cash0: float,
                      price_ticks: np.ndarray) -> dict[str, Any]:
    """`stats.performance` rounded for JSON, with the buy-and-hold return of the first
    instrument over the same samples (price at the first sample to the last)."""
    perf = {k: (round(v, 10) if isinstance(v, float) else v)
            for k, v in stats.performance(ts, eq, cash0).items()}
    have = np.flatnonzero(price_ticks > 0)
    perf["buy_and_hold_return"] = (
        round(float(price_ticks[-1]) / float(price_ticks[have[0]]) - 1.0, 10)
        if have.shape[0] and price_ticks[-1] > 0 else None)
    if perf["sharpe"] is not None:
        perf["sharpe"] = round(perf["sharpe"], 4)
    return perf


def _instrument(inst: Any) -> dict[str, str]:
    return {"id": inst.id, "tick_size": str(inst.tick_size), "lot_size": str(inst.lot_size),
            "multiplier": str(inst.multiplier), "currency": inst.currency}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Decimal):
        return money(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


def write_artifacts(session: "Session", out_dir: Path) -> dict[str, str]:
    """Write fills.csv and equity.csv; return every file the run produces (the tearsheet comes
    later, from `write_tearsheet`, outside the throughput figure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"report": str(out_dir / "report.json"), "fills": str(out_dir / "fills.csv"),
             "tearsheet": str(out_dir / TEARSHEET_NAME),
             "equity": str(out_dir / TEARSHEET_NAME)}  # the key of the old equity.html chart
    if session.recorder is not None:
        files["decisions"] = str(session.recorder.path)
    if session.journal is not None:
        files["journal"] = str(session.journal.path)  # the state dir's when there is one
    write_fills_csv(out_dir / "fills.csv", session.fills, session.instruments)
    ts, eq, pos = session.portfolio.curve.arrays()
    # The equity curve as data (the walk-forward and notebooks read it; the tearsheet draws it).
    files["equity_csv"] = str(out_dir / "equity.csv")
    rows = "".join(f"{t},{e!r},{p}\n" for t, e, p in zip(ts.tolist(), eq.tolist(), pos.tolist()))
    atomic_write(out_dir / "equity.csv", ("ts_ns,equity,position_lots\n" + rows).encode())
    return files


def write_tearsheet(session: "Session", out_dir: Path, report: dict[str, Any]) -> float:
    """Write tearsheet.html (plotly, imported here only); its seconds go into
    report["seconds"]["tearsheet"] and are returned."""
    import time

    from himari.daemon.report.tearsheet import tearsheet_input, write_tearsheet as write_page

    t0 = time.perf_counter()
    write_page(out_dir / TEARSHEET_NAME, tearsheet_input(session, report))
    seconds = time.perf_counter() - t0
    report.setdefault("seconds", {})["tearsheet"] = round(seconds, 4)
    return seconds


def write_json_report(out_dir: Path, report: dict[str, Any]) -> None:
    write_json(out_dir / "report.json", report)


def summary_text(report: dict[str, Any]) -> str:
    lines = ["himari replay summary"]
    for item in report["inputs"]:
        lines.append(f"  input: {item['input']}: {item['description']}")
    keys = ["ticks", "bars", "decisions", "orders", "fills", "round_trips", "malformed_rows",
            "pnl", "fees", "sharpe", "max_drawdown", "max_drawdown_pct", "win_rate", "exposure",
            "ticks_per_second", "ticks_per_second_with_startup"]
    for k in keys:
        v = report.get(k)
        if k == "sharpe" and v is None:
            v = report.get("sharpe_note", "n/a")
        lines.append(f"  {k:<30} {v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool)
                     else f"  {k:<30} {v}")
    risk = report.get("risk", {})
    if risk.get("rejected"):
        lines.append(f"  risk rejections              {risk['rejected']}")
    if risk.get("halted"):
        lines.append(f"  RISK HALTED: {risk.get('halt_reason')}")
    lines.append("  stage latency (us)            p50        p99      count")
    for stage, s in sorted(report["stage_latency_us"].items()):
        lines.append(f"    {stage:<26} {s['p50']:>9.2f} {s['p99']:>10.2f} {s['count']:>10,}")
    files = report.get("files", {})
    for name, path in files.items():
        if name == "equity" and path == files.get("tearsheet"):
            continue  # the old key, kept for readers of report.json: the same file
        lines.append(f"  wrote {name}: {path}")
    return "\n".join(lines)


def print_summary(report: dict[str, Any]) -> None:
    print(summary_text(report), file=sys.stdout, flush=True)
