"""The data catalog: a CSV is parsed once and read back from Parquet, exactly; a changed file or
mapping is a miss; `himari data import` / `ls`; replays identical with and without it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import numpy as np
import pytest

from himari import __version__
from himari.daemon import catalog
from himari.daemon.cli import main
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.files import open_file_feed

T0 = 1_704_067_200_000_000_123
QUIET = ["--set", "log.level=warning", "--set", "replay.progress=false"]
# The default strategy (the ensemble) needs a week of data before it decides; these replays only
# need one that trades on the file's ticks.
EMA = ["--set", 'strategy.name="ema_cross"']


@pytest.fixture
def cat_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "catalog"
    monkeypatch.setenv(catalog.ENV, str(d))
    return d


def trades_csv(path: Path, n: int = 3000, shift: int = 0) -> Path:
    with path.open("w") as fh:
        fh.write("ts_ns,price,size,side\n")
        for i in range(n):
            fh.write(f"{T0 + i * 997 + shift},{100 + ((i * 7) % 23) * 0.25:.2f},{1 + i % 5},"
                     f"{'BSN'[i % 3]}\n")
    return path


def arrays(feed) -> dict[str, np.ndarray]:
    bs = list(feed.batches())
    return {f: np.concatenate([getattr(b, f) for b in bs])
            for f in ("ts_ns", "price", "size", "side", "bid", "ask")}


def same_feed(a, b) -> None:
    ta, tb = arrays(a), arrays(b)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and np.array_equal(ta[k], tb[k]), k
    assert a.describe == b.describe and a.stats == b.stats and a.instrument == b.instrument
    assert a.kind == b.kind and a.bar_seconds == b.bar_seconds


CFG = FeedConfig(kind="file")


def test_first_open_stores_and_the_next_reads_the_same_ticks(cat_dir, tmp_path):
    p = trades_csv(tmp_path / "t.csv")
    fresh = open_file_feed(p, CFG, "X")
    first = catalog.open_cached(p, CFG, "X")
    assert first.catalog == "stored"
    [man_path] = list(cat_dir.glob("*.json"))
    man = json.loads(man_path.read_text())
    assert man["himari_version"] == __version__ and man["source"]["size"] == p.stat().st_size
    assert len(man["source"]["sha256"]) == 64 and man["mapping"]["out_of_order"] == "drop"
    assert man["columns"] == {"ts": "ts_ns", "price": "price", "size": "size", "side": "side"}
    assert man["instrument"]["tick_size"] == "0.25" and man_path.with_suffix(".parquet").is_file()
    second = catalog.open_cached(p, CFG, "X")
    assert second.catalog == "read"
    same_feed(fresh, second)


def test_bars_and_quotes_round_trip_exactly(cat_dir, tmp_path):
    bars = tmp_path / "b.csv"
    bars.write_text("time,open,high,low,close,volume\n" + "".join(
        f"2024-01-01 00:{m:02d}:00,{10 + m * 0.5},{12 + m * 0.5},{9 + m * 0.5},{11 + m * 0.5},{m + 1}\n"
        for m in range(30)))
    quotes = tmp_path / "q.csv"
    quotes.write_text("timestamp,bid,ask,bid_size,ask_size\n" + "".join(
        f"{T0 + i},{1.1 + i * 1e-5:.5f},{1.1002 + i * 1e-5:.5f},{i % 4 + 1},{i % 3 + 1}\n"
        for i in range(50)))
    for p in (bars, quotes):
        fresh = open_file_feed(p, CFG, "X")
        assert catalog.open_cached(p, CFG, "X").catalog == "stored"
        cached = catalog.open_cached(p, CFG, "X")
        assert cached.catalog == "read"
        same_feed(fresh, cached)


def test_a_changed_file_is_a_miss_even_with_the_same_size_and_mtime(cat_dir, tmp_path):
    p = trades_csv(tmp_path / "t.csv")
    catalog.open_cached(p, CFG, "X")
    st = p.stat()
    trades_csv(p, shift=1)  # every stamp 1 ns later: same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size
    again = catalog.open_cached(p, CFG, "X")
    assert again.catalog == "stored"
    assert arrays(again)["ts_ns"][0] == T0 + 1
    assert catalog.open_cached(p, CFG, "X").catalog == "read"


def test_a_touched_but_unchanged_file_still_hits(cat_dir, tmp_path):
    p = trades_csv(tmp_path / "t.csv")
    catalog.open_cached(p, CFG, "X")
    os.utime(p, ns=(1, 1_600_000_000_000_000_000))
    assert catalog.open_cached(p, CFG, "X").catalog == "read"


def test_a_changed_mapping_or_grid_is_a_miss(cat_dir, tmp_path):
    from decimal import Decimal

    p = trades_csv(tmp_path / "t.csv")
    catalog.open_cached(p, CFG, "X")
    mapped = msgspec.structs.replace(CFG, side_codes={"N": 1})
    other = catalog.open_cached(p, mapped, "X")
    assert other.catalog == "stored" and arrays(other)["side"][2] == 1
    assert catalog.open_cached(p, mapped, "X").catalog == "read"
    assert catalog.open_cached(p, CFG, "X", tick=Decimal("0.05")).catalog == "stored"


def test_a_damaged_manifest_is_ignored_and_replaced(cat_dir, tmp_path):
    p = trades_csv(tmp_path / "t.csv")
    catalog.open_cached(p, CFG, "X")
    [man] = list(cat_dir.glob("*.json"))
    man.write_text("{not json")
    assert catalog.open_cached(p, CFG, "X").catalog == "stored"


def test_catalog_off_and_parquet_inputs_are_not_stored(cat_dir, tmp_path):
    p = trades_csv(tmp_path / "t.csv")
    assert catalog.open_cached(p, msgspec.structs.replace(CFG, catalog=False), "X").catalog == ""
    assert not cat_dir.exists()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"ts_ns": [T0, T0 + 1], "price": [1.5, 1.75]}), pq_path)
    assert catalog.open_cached(pq_path, CFG, "X").catalog == "" and not cat_dir.exists()
    d = msgspec.structs.replace(CFG, catalog_dir=str(tmp_path / "elsewhere"))
    assert catalog.catalog_dir(d) == tmp_path / "elsewhere"


def test_data_import_and_ls(cat_dir, tmp_path, capsys):
    p = trades_csv(tmp_path / "t.csv")
    assert main(["data", "import", str(p)]) == 0
    assert "stored" in capsys.readouterr().out
    assert main(["data", "import", str(p)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["data", "ls"]) == 0
    out = capsys.readouterr().out
    assert "1 entry" in out and "current" in out and str(p.resolve()) in out and "3,000 ticks" in out
    trades_csv(p, n=10)
    assert main(["data", "ls"]) == 0
    assert "changed" in capsys.readouterr().out
    assert main(["data", "import", str(tmp_path / "missing.csv")]) == 2


def test_replays_are_identical_with_and_without_the_catalog(cat_dir, tmp_path, capsys):
    p = trades_csv(tmp_path / "t.csv", n=20_000)
    runs = {}
    for name, extra in (("off", ["--set", "feed.catalog=false"]), ("store", []), ("read", [])):
        out = tmp_path / name
        assert main(["replay", str(p), "--out", str(out), "--quiet", *QUIET, *EMA,
                     "--set", "strategy.params.bar_spec=50t", *extra]) == 0, capsys.readouterr().err
        rep = json.loads((out / "report.json").read_text())
        runs[name] = (rep, (out / "fills.csv").read_text())
    assert runs["store"][0]["inputs"][0]["catalog"] == "stored"
    assert runs["read"][0]["inputs"][0]["catalog"] == "read"
    assert runs["off"][1] == runs["store"][1] == runs["read"][1]  # every fill, to the nanosecond
    assert runs["off"][1].count("\n") > 5
    for key in ("ticks", "fills", "pnl", "malformed_rows"):
        assert runs["off"][0][key] == runs["store"][0][key] == runs["read"][0][key], key
