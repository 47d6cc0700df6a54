"""Several instruments in one session: one file per instrument, merged in time order; one strategy
instance per instrument; plug-ins by import path."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import numpy as np

from himari.daemon.cli import main
from himari.daemon.events import TickBatch
from himari.daemon.sources import infer_currency, merge_in_time_order, split_inputs

QUIET = ["--set", "log.level=warning", "--set", "replay.progress=false"]


def trades(path: Path, n: int, start_ms: int, step_ms: int, base: float) -> Path:
    rows = [f"{start_ms + i * step_ms},{base + (i % 23) * 0.25 + (i // 60) * 0.5:.2f},{1 + i % 3}"
            for i in range(n)]
    path.write_text("timestamp,price,quantity\n" + "\n".join(rows) + "\n")
    return path


def batch(inst: str, ts: list[int]) -> TickBatch:
    a = np.array(ts, dtype=np.int64)
    return TickBatch.from_trades(inst, a, np.full(len(a), 100), np.ones(len(a), dtype=np.int64))


def test_merge_keeps_time_order_and_gives_ties_to_the_first_stream():
    a = iter([batch("A", [1, 3, 5, 7]), batch("A", [9, 11])])
    b = iter([batch("B", [2, 3, 4]), batch("B", [10, 12])])
    runs = list(merge_in_time_order([a, b]))
    merged = [(r.instrument_id, int(t)) for r in runs for t in r.ts_ns]
    assert [t for _, t in merged] == sorted(t for _, t in merged)
    assert merged.index(("A", 3)) < merged.index(("B", 3))  # a tie goes to the first input
    assert sorted(merged) == sorted([("A", t) for t in (1, 3, 5, 7, 9, 11)]
                                    + [("B", t) for t in (2, 3, 4, 10, 12)])
    assert all(len(set(r.instrument_id for _ in r.ts_ns)) == 1 for r in runs)


def test_inputs_are_grouped_by_instrument():
    assert split_inputs(["d1.csv", "d2.csv"], "") == [("d1", ["d1.csv", "d2.csv"])]
    assert split_inputs(["BTC=b.csv", "b2.csv", "ETH=e.csv"], "") == [
        ("BTC", ["b.csv", "b2.csv"]), ("ETH", ["e.csv"])]
    assert infer_currency("usdjpy-ticks") == "JPY"
    assert infer_currency("EUR/USD") == "USD"
    assert infer_currency("btcusdt-trades") == "USD"


def test_two_instruments_replay_with_one_strategy_each(capsys, tmp_path):
    a = trades(tmp_path / "a.csv", 3000, 1_700_000_000_000, 1000, 100.0)
    b = trades(tmp_path / "b.csv", 2000, 1_700_000_000_500, 1500, 50.0)
    out = tmp_path / "o"
    # the EMA cross, pinned: it trades on 5,000 ticks (the default ensemble needs a week)
    code = main(["replay", f"AAA={a}", f"BBB={b}", "--out", str(out), "--quiet", *QUIET,
                 "--set", 'strategy.name="ema_cross"', "--set", "strategy.params.bar_spec=20t",
                 "--set", "strategy.params.slow=8",
                 "--set", "strategy.params.fast=3", "--set", "instrument.currency=USD"])
    err = capsys.readouterr().err
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["ticks"] == 5000
    assert set(rep["instruments"]) == {"AAA", "BBB"}
    assert rep["strategy"]["instances"] == ["ema_cross.AAA", "ema_cross.BBB"]
    with (out / "fills.csv").open() as fh:
        fills = list(csv.DictReader(fh))
    assert {f["instrument"] for f in fills} == {"AAA", "BBB"}
    assert [int(f["ts_ns"]) for f in fills] == sorted(int(f["ts_ns"]) for f in fills)
    for inst in ("AAA", "BBB"):  # each instrument flat at the end, PnL recomputes from its fills
        mine = [f for f in fills if f["instrument"] == inst]
        signed = [(1 if f["side"] == "BUY" else -1) * Decimal(f["quantity"]) for f in mine]
        assert sum(signed) == 0 and rep["instruments"][inst]["position_lots"] == 0
    cash = -sum((1 if f["side"] == "BUY" else -1) * Decimal(f["quantity"]) * Decimal(f["price"])
                for f in fills)
    fees = sum(Decimal(f["fee"]) for f in fills)
    assert Decimal(rep["pnl"]) == cash - fees


def test_a_strategy_by_import_path_and_a_bad_path_is_exit_2(capsys, tmp_path):
    a = trades(tmp_path / "a.csv", 600, 1_700_000_000_000, 1000, 100.0)
    code = main(["replay", str(a), "--out", str(tmp_path / "o"), "--quiet", *QUIET,
                 "--set", "strategy.name=\"himari.strategies.ema_cross\"",
                 "--set", "strategy.params.bar_spec=20t", "--set", "strategy.params.slow=8",
                 "--set", "strategy.params.fast=3"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "report.json").read_text())["fills"] > 0
    code = main(["replay", str(a), "--out", str(tmp_path / "p"), "--quiet", *QUIET,
                 "--set", "strategy.name=\"no_such_pkg.strategy\""])
    err = capsys.readouterr().err
    assert code == 2 and "strategy.name" in err and "no_such_pkg" in err and "Traceback" not in err
