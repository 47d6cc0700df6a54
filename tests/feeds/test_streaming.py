"""Streamed file feeds (feeds/blocks.py): a file read block by block yields exactly what a
whole-file read yields (ticks, grid, statistics, description, errors), at any block size, through
the catalog too; a replay gives byte-identical fills; and memory stays at a block, not a file."""

from __future__ import annotations

import csv
import json
import tracemalloc
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from himari.daemon import catalog
from himari.daemon.cli import main
from himari.daemon.feeds import files
from himari.daemon.feeds.base import FeedError
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.files import open_file_feed

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CFG = FeedConfig(kind="file")
FIELDS = ("ts_ns", "price", "size", "side", "bid", "ask")
QUIET = ["--set", "log.level=warning", "--set", "replay.progress=false", "--quiet"]


def everything(feed):
    bs = list(feed.batches())
    return {f: np.concatenate([getattr(b, f) for b in bs]) if bs else np.zeros(0)
            for f in FIELDS}


def assert_same(a, b):
    ta, tb = everything(a), everything(b)
    for f in FIELDS:
        assert np.array_equal(ta[f], tb[f]), f
    assert a.instrument == b.instrument
    assert a.describe == b.describe
    assert msgspec.to_builtins(a.stats.__dict__) == msgspec.to_builtins(b.stats.__dict__)
    assert (a.expected_ticks, a.first_ts, a.last_ts) == (b.expected_ticks, b.first_ts, b.last_ts)
    assert a.expected_ticks == len(ta["ts_ns"])


def write_trades(path: Path, n: int, *, seed: int = 7, grid: float = 0.25,
                 flat_head: int = 0, bad_every: int = 0, late_every: int = 0,
                 sides: tuple[str, ...] = ("B", "S", "N", "X")) -> Path:
    """A trades CSV: prices on `grid` (the first `flat_head` rows at one price, so early blocks
    see no grid), malformed rows and late rows sprinkled through (across block boundaries)."""
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(1, 5_000_000, n))
    k = 4000 + np.cumsum(rng.integers(-2, 3, n))
    k[:flat_head] = 4002
    lines = ["ts_ns,price,size,side"]
    for i in range(n):
        t = int(ts[i])
        if late_every and i % late_every == late_every - 1:
            t -= 50_000_000  # older than rows before it
        price = f"{k[i] * grid:.2f}"
        if bad_every and i % bad_every == bad_every // 2:
            price = "oops" if i % 2 else "-1"
        lines.append(f"{t},{price},{1 + i % 5}.5,{sides[i % len(sides)]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_quotes(path: Path, n: int) -> Path:
    rng = np.random.default_rng(3)
    ts = 1_600_000_000_000 + np.cumsum(rng.integers(1, 400, n))
    bid = 150_000 + np.cumsum(rng.integers(-3, 4, n))
    rows = ["time,bid,ask,bid_size,ask_size"]
    rows += [f"{int(ts[i])},{bid[i] / 1000:.3f},{(bid[i] + 1 + i % 3) / 1000:.3f},{1 + i % 7},{2 + i % 4}"
             for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("block", [1 << 11, 1 << 14, 1 << 22])
def test_trades_streamed_at_any_block_size_equal_the_whole_read(tmp_path, block):
    p = write_trades(tmp_path / "t.csv", 6000, flat_head=300, bad_every=997, late_every=613)
    whole = open_file_feed(p, CFG, "X", block_bytes=0)
    streamed = open_file_feed(p, CFG, "X", block_bytes=block)
    assert not whole.streamed and streamed.streamed
    assert_same(streamed, whole)
    assert whole.instrument.tick_size == Decimal("0.25")  # not 0.01: the grid, over every block
    assert whole.stats.malformed > 0 and whole.stats.out_of_order > 0
    assert whole.stats.side_unknown > 0 and whole.stats.side_codes_unknown == ["X"]


def test_small_files_are_read_whole_and_large_ones_streamed(tmp_path, monkeypatch):
    p = write_trades(tmp_path / "t.csv", 2000)
    assert not open_file_feed(p, CFG, "X").streamed
    monkeypatch.setattr(files, "STREAM_ABOVE", p.stat().st_size - 1)
    assert open_file_feed(p, CFG, "X").streamed


def test_a_first_block_on_a_coarser_grid_is_moved_to_the_file_grid(tmp_path, monkeypatch):
    # the first blocks only hold multiples of 0.5, later ones of 0.25: early ticks are rescaled
    p = tmp_path / "g.csv"
    rows = ["ts_ns,price,size"] + [f"{1_000 + i},{100 + (i % 4) * 0.5:.2f},1" for i in range(3000)]
    rows += [f"{5_000 + i},{100 + (i % 5) * 0.25:.2f},0.01" for i in range(3000)]
    p.write_text("\n".join(rows) + "\n")
    whole = open_file_feed(p, CFG, "X", block_bytes=0)
    streamed = open_file_feed(p, CFG, "X", block_bytes=4096)
    assert_same(streamed, whole)
    assert (whole.instrument.tick_size, whole.instrument.lot_size) == (Decimal("0.25"), Decimal("0.01"))
    assert len(streamed.grid_runs) > 1  # the blocks really were on different grids
    monkeypatch.setattr(files, "STREAM_ABOVE", 0)
    monkeypatch.setattr(files, "BLOCK_BYTES", 4096)
    stored = catalog.open_cached(p, CFG, "X")
    assert stored.catalog == "stored" and stored.streamed
    man = json.loads((catalog.catalog_dir(CFG) / (catalog.entry_id(p) + ".json")).read_text())
    assert len(man["grid_runs"]) > 1 and man["ticks"] == whole.expected_ticks
    assert_same(stored, whole)
    read = catalog.open_cached(p, CFG, "X")
    assert read.catalog == "read"
    assert_same(read, whole)


def test_quotes_streamed_equal_the_whole_read(tmp_path):
    p = write_quotes(tmp_path / "q.csv", 5000)
    assert_same(open_file_feed(p, CFG, "Q", block_bytes=4096), open_file_feed(p, CFG, "Q", block_bytes=0))


def test_given_tick_refuses_the_same_rows_streamed(tmp_path):
    p = write_trades(tmp_path / "t.csv", 3000, grid=0.25)
    whole = open_file_feed(p, CFG, "X", Decimal("0.5"), block_bytes=0)
    streamed = open_file_feed(p, CFG, "X", Decimal("0.5"), block_bytes=2048)
    assert whole.stats.off_tick > 0
    assert_same(streamed, whole)


def test_unsorted_file_under_sort_is_read_whole_and_fail_names_the_same_line(tmp_path,
                                                                              monkeypatch):
    p = write_trades(tmp_path / "t.csv", 3000, late_every=701)
    sort = msgspec.structs.replace(CFG, out_of_order="sort")
    feed = open_file_feed(p, sort, "X", block_bytes=2048)
    assert not feed.streamed  # only a whole read can sort
    assert_same(feed, open_file_feed(p, sort, "X", block_bytes=0))
    fail = msgspec.structs.replace(CFG, out_of_order="fail")
    with pytest.raises(FeedError) as whole_err:
        open_file_feed(p, fail, "X", block_bytes=0)
    with pytest.raises(FeedError) as streamed_err:
        open_file_feed(p, fail, "X", block_bytes=2048)
    assert str(streamed_err.value) == str(whole_err.value)
    assert "line 702" in str(whole_err.value)
    monkeypatch.setattr(files, "STREAM_ABOVE", 0)
    monkeypatch.setattr(files, "BLOCK_BYTES", 2048)
    monkeypatch.setenv("HIMARI_CATALOG_DIR", str(tmp_path / "catalog"))
    with pytest.raises(FeedError):  # through the catalog: nothing half-written is left
        catalog.open_cached(p, fail, "X")
    root = catalog.catalog_dir(fail)
    assert not (root.is_dir() and list(root.iterdir()))


def test_every_row_malformed_is_the_same_error_streamed(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("ts_ns,price,size\n" + "".join(f"{i},x{i},1\n" for i in range(1, 2000)))
    with pytest.raises(FeedError) as whole_err:
        open_file_feed(p, CFG, "X", block_bytes=0)
    with pytest.raises(FeedError) as streamed_err:
        open_file_feed(p, CFG, "X", block_bytes=1024)
    assert str(streamed_err.value) == str(whole_err.value)
    assert "all 1,999 data rows are malformed" in str(whole_err.value)


def test_drop_before_and_regrid_on_a_streamed_feed(tmp_path):
    p = write_trades(tmp_path / "t.csv", 4000)
    whole = open_file_feed(p, CFG, "X", block_bytes=0)
    streamed = open_file_feed(p, CFG, "X", block_bytes=2048)
    t = int(everything(whole)["ts_ns"][1500])
    assert streamed.drop_before(t) == whole.drop_before(t) == 1500
    streamed.regrid(Decimal("0.05"), Decimal("0.1"))
    whole.regrid(Decimal("0.05"), Decimal("0.1"))
    assert_same(streamed, whole)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared market data not found at {DATA}")
@pytest.mark.parametrize("name", ["usdjpy-ticks.csv", "quote_tick_data.csv",
                                  "btcusdt-trades.parquet", "btc-perp-20211231-20220201_1m.csv"])
def test_shared_files_streamed_equal_the_whole_read(monkeypatch, name):
    monkeypatch.setattr(files, "BLOCK_ROWS", 3000)  # several Parquet record batches
    monkeypatch.setattr("himari.daemon.feeds.blocks.BLOCK_ROWS", 3000)
    streamed = open_file_feed(DATA / name, CFG, "X", block_bytes=1 << 16)
    assert streamed.streamed == (not name.endswith("_1m.csv"))  # bars are read whole
    assert_same(streamed, open_file_feed(DATA / name, CFG, "X", block_bytes=0))


def test_a_streamed_read_holds_a_block_not_the_file(tmp_path):
    """Peak memory (Python/numpy via tracemalloc, plus Arrow's pool) of opening and reading
    every batch: flat in the file's length when streamed, proportional to it when whole."""
    small = write_trades(tmp_path / "small.csv", 100_000, sides=("B", "S"))
    big = write_trades(tmp_path / "big.csv", 200_000, sides=("B", "S"))
    cfg = msgspec.structs.replace(CFG, batch_size=4096)
    open_file_feed(small, cfg, "X", block_bytes=1 << 16)  # imports and kernels, before measuring

    def peak(p: Path, block: int) -> int:
        tracemalloc.start()
        arrow0 = pa.total_allocated_bytes()
        arrow_peak = 0
        n = 0
        for b in open_file_feed(p, cfg, "X", block_bytes=block).batches():
            n += len(b)
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow0)
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return py_peak + arrow_peak

    whole_small, whole_big = peak(small, 0), peak(big, 0)
    streamed_small, streamed_big = peak(small, 1 << 16), peak(big, 1 << 16)
    assert whole_big > 1.8 * whole_small and whole_big > 200_000 * 25  # every tick held
    assert streamed_big < 1.2 * streamed_small + (256 << 10)  # a block, whatever the length
    assert streamed_big < whole_big / 3


def _replay(tmp_path: Path, data: Path, name: str, *extra: str) -> tuple[bytes, dict]:
    out = tmp_path / name
    code = main(["replay", str(data), "--out", str(out), *QUIET,
                 "--set", 'strategy.name="ema_cross"', "--set", "strategy.params.bar_spec=50t", "--set", "strategy.params.slow=8",
                 "--set", "strategy.params.fast=3", *extra])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    return (out / "fills.csv").read_bytes(), rep


FIGURES = ("ticks", "bars", "orders", "fills", "round_trips", "malformed_rows", "pnl", "fees", "sharpe",
           "max_drawdown", "max_drawdown_pct", "win_rate", "exposure", "instruments")


def test_replay_with_tiny_blocks_gives_byte_identical_fills(tmp_path, monkeypatch):
    data = write_trades(tmp_path / "r.csv", 20_000, flat_head=500, bad_every=1999,
                        late_every=2503)
    no_cat = ("--set", "feed.catalog=false")
    monkeypatch.setattr(files, "STREAM_ABOVE", 0)
    monkeypatch.setattr(files, "BLOCK_BYTES", 0)  # the whole-file read
    fills_whole, rep_whole = _replay(tmp_path, data, "whole", *no_cat)
    monkeypatch.setattr(files, "BLOCK_BYTES", 4096)
    fills_tiny, rep_tiny = _replay(tmp_path, data, "tiny", *no_cat)
    monkeypatch.setattr(files, "BLOCK_BYTES", 1 << 30)  # one block
    fills_one, rep_one = _replay(tmp_path, data, "one", *no_cat)
    monkeypatch.setattr(files, "BLOCK_BYTES", 4096)
    fills_stored, rep_stored = _replay(tmp_path, data, "stored")  # through the catalog
    fills_read, rep_read = _replay(tmp_path, data, "read")
    assert rep_stored["inputs"][0]["catalog"] == "stored"
    assert rep_read["inputs"][0]["catalog"] == "read"
    assert fills_whole.count(b"\n") > 5
    for fills, rep in ((fills_tiny, rep_tiny), (fills_one, rep_one), (fills_stored, rep_stored),
                       (fills_read, rep_read)):
        assert fills == fills_whole
        for key in FIGURES:
            assert rep.get(key) == rep_whole.get(key), key
        assert rep["inputs"][0]["description"] == rep_whole["inputs"][0]["description"]
    assert len(list(csv.DictReader(fills_whole.decode().splitlines()))) == rep_whole["fills"]


def test_a_catalog_entry_is_read_a_row_group_at_a_time(tmp_path, monkeypatch):
    """Arrow's peak while reading a stored entry stays at a few row groups, not the file (a
    pre-buffered Parquet read holds every row group at once)."""
    p = write_trades(tmp_path / "big.csv", 200_000, sides=("B", "S"))
    monkeypatch.setenv("HIMARI_CATALOG_DIR", str(tmp_path / "catalog"))
    monkeypatch.setattr(files, "STREAM_ABOVE", 0)
    monkeypatch.setattr(files, "BLOCK_BYTES", 1 << 16)  # ~60 row groups
    monkeypatch.setattr(files, "BLOCK_ROWS", 4096)
    whole = open_file_feed(p, CFG, "X", block_bytes=0)
    assert catalog.open_cached(p, CFG, "X").catalog == "stored"
    feed = catalog.open_cached(p, CFG, "X")
    assert feed.catalog == "read" and feed.streamed
    pq_path = catalog.catalog_dir(CFG) / (catalog.entry_id(p) + ".parquet")
    assert pq.ParquetFile(pq_path).num_row_groups > 20
    base, peak = pa.total_allocated_bytes(), 0
    for _ in feed.batches():
        peak = max(peak, pa.total_allocated_bytes() - base)
    assert peak < pq_path.stat().st_size / 4
    assert_same(feed, whole)


@pytest.mark.parametrize("policy", ["drop", "sort"])
def test_several_overlapping_files_on_different_grids_stream_as_read_whole(tmp_path, monkeypatch,
                                                                           policy):
    from himari.daemon.config import parse_config
    from himari.daemon.sources import open_source

    # a: 0.5 grid, whole lots; b: 0.25 grid, 0.1 lots, starting inside a (overlap)
    a = tmp_path / "a.csv"
    a.write_text("ts_ns,price,size\n" + "".join(f"{1_000_000 + 10 * i},{100 + (i % 6) * 0.5},"
                                                f"{1 + i % 3}\n" for i in range(3000)))
    b = tmp_path / "b.csv"
    b.write_text("ts_ns,price,size\n" + "".join(f"{1_025_000 + 10 * i},{101 + (i % 7) * 0.25},"
                                                f"{0.1 * (1 + i % 4):.1f}\n" for i in range(3000)))
    cfg = parse_config(f'[feed]\nout_of_order = "{policy}"\ncatalog = false\n')

    def run(block: int):
        monkeypatch.setattr(files, "STREAM_ABOVE", 0)
        monkeypatch.setattr(files, "BLOCK_BYTES", block)
        src = open_source(cfg, [str(b), str(a)])  # given out of order
        ticks = [np.concatenate([getattr(x, f) for x in src.batches()]) for f in ("ts_ns", "price", "size")]
        return src, ticks

    (whole_src, whole), (streamed_src, streamed) = run(0), run(2048)
    assert all(np.array_equal(x, y) for x, y in zip(whole, streamed))
    assert whole_src.describe() == streamed_src.describe()
    assert whole_src.instrument.tick_size == Decimal("0.25")
    assert whole_src.instrument.lot_size == Decimal("0.1")
    assert np.all(np.diff(whole[0]) >= 0)
    assert streamed_src.inputs[0].feeds[0].streamed
