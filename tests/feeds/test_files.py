"""File feeds: the shared data files, bars as ticks, malformed rows, columns, time order, config."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himari.daemon.configbase import ConfigError
from himari.daemon.events import TickKind
from himari.daemon.feeds.base import FeedError
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.files import bars_to_ticks, open_file_feed
from himari.daemon.feeds.timeparse import parse_timestamps
from himari.daemon.feeds.values import infer_step, to_grid

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared market data not found at {DATA}")
CFG = FeedConfig(kind="file")
MIN = 60_000_000_000


def ns(text: str) -> int:
    dt = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def all_ticks(feed):
    bs = list(feed.batches())
    cat = {f: np.concatenate([getattr(b, f) for b in bs]) for f in ("ts_ns", "price", "size", "side", "bid", "ask")}
    return bs, cat


# ---- the shared data files, auto-detected from the path alone

SHARED = [
    # file, kind, rows, ticks, tick size, lot size, first ts, first (price, size, side, bid, ask)
    # tick 0.125: the greatest common step of its prices (issue 15; it was 0.001, the decimals)
    ("btc-perp-20211231-20220201_1m.csv", "bars", 45_031, 4 * 45_031, "0.125", "1E-7",
     "2021-12-31 23:01:00", (370_552, 23_004_137_295_000 // 4, 0, 370_552, 370_552)),
    ("gbpusd-m1-bid-2012.csv", "bars", 30_117, 4 * 30_117, "0.00001", "1",
     "2012-02-01 00:00:00", (157_597, 0, 0, 157_597, 157_597)),
    ("quote_tick_data.csv", "quotes", 9_500, 9_500, "0.00001", "1",
     "2020-01-01 17:00:00.065", ((112_120 + 112_172) // 2, 0, 0, 112_120, 112_172)),
    ("usdjpy-ticks.csv", "quotes", 1_000, 1_000, "0.001", "1",
     "2013-01-01 22:00:00.295", ((86_655 + 86_728) // 2, 0, 0, 86_655, 86_728)),
    ("btcusdt-trades.parquet", "trades", 2_001, 2_001, "0.01", "0.000001",
     "2021-01-08 00:00:00.278", (3_943_248, 263, -1, 3_943_248, 3_943_248)),
]


@needs_data
@pytest.mark.parametrize("name,kind,rows,ticks,tick,lot,first_ts,first", SHARED)
def test_shared_file_reads_with_auto_detection(name, kind, rows, ticks, tick, lot, first_ts, first):
    feed = open_file_feed(DATA / name, CFG, "X")
    assert feed.kind == kind
    assert (feed.stats.rows, feed.stats.ticks, feed.stats.malformed, feed.stats.out_of_order) == (rows, ticks, 0, 0)
    assert feed.instrument.tick_size == Decimal(tick) and feed.instrument.lot_size == Decimal(lot)
    batches, t = all_ticks(feed)
    assert len(t["ts_ns"]) == ticks == feed.expected_ticks
    assert all(len(b) <= CFG.batch_size for b in batches)
    assert np.all(np.diff(t["ts_ns"]) >= 0)
    assert np.all(t["price"] > 0) and np.all(t["bid"] <= t["ask"])
    assert t["ts_ns"][0] == ns(first_ts)
    assert tuple(int(t[f][0]) for f in ("price", "size", "side", "bid", "ask")) == first
    assert batches[0].kind == (TickKind.QUOTES if kind == "quotes" else TickKind.TRADES)
    assert f"{rows:,} rows" in feed.describe


@needs_data
def test_shared_bar_file_is_labelled_as_bars_replayed_as_ticks():
    feed = open_file_feed(DATA / "btc-perp-20211231-20220201_1m.csv", CFG, "BTC")
    assert feed.bar_seconds == 60
    assert "1-minute OHLCV bars" in feed.describe and "4 ticks per bar" in feed.describe
    assert feed.instrument.id == "BTC" and feed.instrument.currency == "USD"


@needs_data
def test_shared_trades_side_follows_buyer_maker():
    import pyarrow.parquet as pq

    table = pq.read_table(DATA / "btcusdt-trades.parquet")
    maker = np.array([v == "True" for v in table.column("buyer_maker").to_pylist()])
    _, t = all_ticks(open_file_feed(DATA / "btcusdt-trades.parquet", CFG, "X"))
    assert np.array_equal(t["side"], np.where(maker, -1, 1))
    assert np.array_equal(t["price"], np.rint(table.column("price").to_numpy() * 100).astype(np.int64))


# ---- bars as ticks


def test_bars_replay_open_low_high_close_by_direction_and_split_volume(tmp_path):
    p = write(tmp_path, "time,open,high,low,close,volume\n"
                        "2024-01-01 00:00:00,10.0,12.0,9.0,11.0,10\n"   # up bar: O L H C
                        "2024-01-01 00:01:00,11.0,11.5,8.0,9.0,7\n"     # down bar: O H L C
                        "2024-01-01 00:02:00,9.0,9.0,9.0,9.0,3\n")      # flat counts as up
    feed = open_file_feed(p, CFG, "X")
    _, t = all_ticks(feed)
    t0 = ns("2024-01-01 00:00:00")
    q = MIN // 4
    assert t["ts_ns"].tolist() == [t0 + k * MIN + j * q for k in range(3) for j in range(4)]
    # tick 0.5: the greatest common step of the prices (issue 15; it was 0.1, the decimals)
    assert t["price"].tolist() == [20, 18, 24, 22, 22, 23, 16, 18, 18, 18, 18, 18]
    assert t["size"].tolist() == [2, 2, 2, 4, 1, 1, 1, 4, 0, 0, 0, 3]
    assert t["size"].reshape(-1, 4).sum(axis=1).tolist() == [10, 7, 3]
    assert feed.instrument.tick_size == Decimal("0.5") and feed.bar_seconds == 60


def test_bars_stamped_by_close_time_shift_back_one_period(tmp_path):
    p = write(tmp_path, "timestamp,open,high,low,close\n"
                        "2024-01-01 00:05:00,1,2,1,2\n2024-01-01 00:10:00,2,3,1,1\n")
    feed = open_file_feed(p, msgspec.structs.replace(CFG, bar_ts="close"), "X")
    _, t = all_ticks(feed)
    assert t["ts_ns"][0] == ns("2024-01-01 00:00:00") and t["ts_ns"][4] == ns("2024-01-01 00:05:00")
    assert feed.bar_seconds == 300 and "no volume: size 0" in feed.describe
    assert t["size"].tolist() == [0] * 8


def test_bar_period_is_the_median_step_or_the_configured_one(tmp_path):
    rows = "".join(f"2024-01-01 00:{m:02d}:00,1,2,1,2\n" for m in (0, 5, 10, 15, 40))  # one gap
    p = write(tmp_path, "timestamp,open,high,low,close\n" + rows)
    assert open_file_feed(p, CFG, "X").bar_seconds == 300
    feed = open_file_feed(p, msgspec.structs.replace(CFG, bar_seconds=60), "X")
    _, t = all_ticks(feed)
    assert feed.bar_seconds == 60 and t["ts_ns"][3] - t["ts_ns"][0] == 3 * MIN // 4


def test_bars_to_ticks_kernel_matches_a_reference():
    rng = np.random.default_rng(1)
    n, d = 50, 300_000_000_000
    o, c = rng.integers(100, 200, n), rng.integers(100, 200, n)
    h, lo = np.maximum(o, c) + rng.integers(0, 5, n), np.minimum(o, c) - rng.integers(0, 5, n)
    v = rng.integers(0, 100, n)
    ts_open = np.arange(n) * d
    ts, px, sz = bars_to_ticks(ts_open, o, h, lo, c, v, d)
    for i in range(n):
        path = [o[i], lo[i], h[i], c[i]] if c[i] >= o[i] else [o[i], h[i], lo[i], c[i]]
        assert px[4 * i:4 * i + 4].tolist() == path
        assert ts[4 * i:4 * i + 4].tolist() == [i * d, i * d + d // 4, i * d + d // 2, i * d + 3 * d // 4]
        assert sz[4 * i:4 * i + 4].tolist() == [v[i] // 4] * 3 + [v[i] - 3 * (v[i] // 4)]


# ---- malformed rows


def test_malformed_trade_rows_are_counted_with_line_numbers(tmp_path):
    p = write(tmp_path, "timestamp,price,qty\n"
                        "2024-01-01 00:00:00,100.5,2\n"      # 2 good
                        "2024-01-01 00:00:01,abc,2\n"        # 3 unparseable price
                        "2024-01-01 00:00:02,nan,2\n"        # 4 NaN price
                        "2024-01-01 00:00:03,100.5,-1\n"     # 5 negative size
                        "2024-01-01 00:00:04,100.5\n"        # 6 missing field
                        "\n"                                 # 7 blank: skipped, not malformed
                        "not a time,100.5,1\n"               # 8 bad timestamp
                        "2024-01-01 00:00:05,0,1\n"          # 9 non-positive price
                        "2024-01-01 00:00:06,inf,1\n"        # 10 non-finite
                        "2024-01-01 00:00:07,101.0,3\n")     # 11 good
    feed = open_file_feed(p, CFG, "X")
    st_ = feed.stats
    assert st_.malformed == 7 and st_.blank == 1 and st_.rows == 9 and st_.ticks == 2
    assert [line for line, _ in st_.malformed_rows] == [3, 4, 5, 6, 8, 9, 10]
    reasons = dict(st_.malformed_rows)
    assert "unparseable price 'abc'" in reasons[3]
    assert "non-finite price" in reasons[4] and "negative size" in reasons[5]
    assert "expected 3 fields, got 2" in reasons[6] and "timestamp" in reasons[8]
    assert "non-positive price" in reasons[9] and "non-finite price" in reasons[10]
    _, t = all_ticks(feed)
    assert t["price"].tolist() == [201, 202] and t["size"].tolist() == [2, 3]  # tick 0.5 (the grid)
    assert "7 malformed rows skipped" in feed.describe


def test_malformed_values_on_the_fast_path_keep_exact_line_numbers(tmp_path):
    # every field parses as a number: no slow path, the checks still name the right lines
    rows = ["ts,price,size"] + [f"{1_700_000_000 + i},{100 + i},1" for i in range(10)]
    rows[4] = "1700000003,nan,1"
    rows[8] = "1700000007,105,-3"
    feed = open_file_feed(write(tmp_path, "\n".join(rows) + "\n"), CFG, "X")
    assert [line for line, _ in feed.stats.malformed_rows] == [5, 9]
    assert feed.stats.ticks == 8
    _, t = all_ticks(feed)
    assert t["ts_ns"][0] == 1_700_000_000 * 1_000_000_000  # epoch seconds detected


def test_bars_with_bad_high_or_low_are_malformed(tmp_path):
    p = write(tmp_path, "timestamp,open,high,low,close,volume\n"
                        "2024-01-01 00:00:00,10,12,9,11,1\n"
                        "2024-01-01 00:01:00,10,10.5,9,11,1\n"    # 3 high < close
                        "2024-01-01 00:02:00,10,12,10.5,11,1\n"   # 4 low > open
                        "2024-01-01 00:03:00,10,12,9,11,-5\n"     # 5 negative volume
                        "2024-01-01 00:04:00,10,12,9,11,1\n")
    feed = open_file_feed(p, CFG, "X")
    assert [line for line, _ in feed.stats.malformed_rows] == [3, 4, 5]
    reasons = [r for _, r in feed.stats.malformed_rows]
    assert "bar high < max(open, close)" in reasons[0] and "bar low > min(open, close)" in reasons[1]
    assert "negative volume" in reasons[2]
    assert feed.stats.ticks == 8 and feed.bar_seconds == 60


def test_crossed_quotes_are_malformed(tmp_path):
    p = write(tmp_path, "timestamp,bid,ask\n2024-01-01 00:00:00,1.10,1.11\n"
                        "2024-01-01 00:00:01,1.12,1.11\n2024-01-01 00:00:02,1.11,1.11\n")
    feed = open_file_feed(p, CFG, "X")
    assert feed.kind == "quotes" and feed.stats.malformed_rows == [(3, "bid > ask: bid=1.12, ask=1.11")]
    _, t = all_ticks(feed)
    assert t["bid"].tolist() == [110, 111] and t["ask"].tolist() == [111, 111]


def test_price_off_a_given_tick_grid_is_malformed(tmp_path):
    p = write(tmp_path, "timestamp,price\n2024-01-01 00:00:00,39432.5\n2024-01-01 00:00:01,39432.48\n")
    feed = open_file_feed(p, CFG, "X", tick_size=Decimal("0.1"))
    assert [line for line, _ in feed.stats.malformed_rows] == [3]
    assert "not a multiple of the tick size 0.1" in feed.stats.malformed_rows[0][1]
    assert feed.stats.off_tick == 1 and "1 price finer than the tick size 0.1 refused" in feed.describe
    assert open_file_feed(p, CFG, "X").instrument.tick_size == Decimal("0.02")  # gcd of the grid


def test_only_the_first_100_malformed_rows_are_kept(tmp_path):
    rows = "".join(f"2024-01-01 00:00:{i % 60:02d},x,1\n" for i in range(150))
    feed = open_file_feed(write(tmp_path, "timestamp,price,size\n" + rows + "2024-01-01 00:01:00,1,1\n"),
                          CFG, "X")
    assert feed.stats.malformed == 150 and len(feed.stats.malformed_rows) == 100
    assert feed.stats.malformed_rows[-1][0] == 101 and feed.stats.ticks == 1


# ---- columns


def test_unknown_column_in_config_names_it_and_lists_the_file_columns(tmp_path):
    p = write(tmp_path, "timestamp,price,qty\n2024-01-01 00:00:00,1,1\n")
    cfg = msgspec.convert({"kind": "file", "columns": {"price": "last_px"}}, FeedConfig)
    with pytest.raises(FeedError, match=r"feed.columns.price = 'last_px'.*timestamp, price, qty"):
        open_file_feed(p, cfg, "X")
    cfg = msgspec.convert({"kind": "file", "columns": {"size": 7}}, FeedConfig)
    with pytest.raises(FeedError, match="has only 3 columns"):
        open_file_feed(p, cfg, "X")


def test_missing_required_column_is_a_clear_error(tmp_path):
    # issue 15: names never seen no longer refuse the file: the values choose (and it says so)
    p = write(tmp_path, "timestamp,foo,bar\n2024-01-01 00:00:00,1,1\n2024-01-01 00:00:01,2,1\n")
    assert "columns chosen by their values" in open_file_feed(p, CFG, "X").describe
    p = write(tmp_path, "timestamp,foo,bar\n2024-01-01 00:00:00,x,y\n", "text.csv")
    with pytest.raises(FeedError, match="cannot tell trades, quotes or bars"):
        open_file_feed(p, CFG, "X")
    with pytest.raises(FeedError, match="no price column"):
        open_file_feed(p, msgspec.structs.replace(CFG, format="trades"), "X")


def test_columns_by_name_and_position_and_headerless(tmp_path):
    p = write(tmp_path, "when;px;amount;aggr\n1700000000000;10.5;3;sell\n1700000000001;10.6;1;buy\n")
    cfg = msgspec.convert({"kind": "file", "format": "trades",
                           "columns": {"ts": "when", "price": 1, "size": "AMOUNT", "side": "aggr"}}, FeedConfig)
    _, t = all_ticks(open_file_feed(p, cfg, "X"))
    assert t["ts_ns"].tolist() == [1_700_000_000_000_000_000, 1_700_000_000_001_000_000]  # ms epoch
    assert t["price"].tolist() == [105, 106] and t["size"].tolist() == [3, 1] and t["side"].tolist() == [-1, 1]
    q = write(tmp_path, "2024-01-01T00:00:00Z,99.5,3\n2024-01-01T00:00:01Z,99.75,1\n", "h.csv")
    feed = open_file_feed(q, CFG, "X")  # headerless: ts, price, size (99.75/99.5 is no quote)
    _, t = all_ticks(feed)
    assert feed.kind == "trades" and t["price"].tolist() == [398, 399] and t["size"].tolist() == [3, 1]
    assert feed.instrument.tick_size == Decimal("0.25")  # the grid's step, not the decimals


def test_ts_format_and_timezone(tmp_path):
    p = write(tmp_path, "time,bid,ask\n01/02/2024 09:30:00.5,1.0,1.5\n")
    cfg = msgspec.structs.replace(CFG, ts_format="%d/%m/%Y %H:%M:%S.%f", timezone="America/New_York")
    _, t = all_ticks(open_file_feed(p, cfg, "X"))
    assert t["ts_ns"][0] == ns("2024-02-01 14:30:00.500")


# ---- time order


def _ooo(tmp_path: Path) -> Path:
    return write(tmp_path, "timestamp,price,size\n2024-01-01 00:00:02,1,1\n2024-01-01 00:00:01,2,1\n"
                           "2024-01-01 00:00:02,3,1\n2024-01-01 00:00:03,4,1\n")


def test_out_of_order_drop_is_the_default(tmp_path):
    feed = open_file_feed(_ooo(tmp_path), CFG, "X")
    _, t = all_ticks(feed)
    assert t["price"].tolist() == [1, 3, 4] and feed.stats.out_of_order == 1
    assert feed.stats.malformed == 0 and "1 out-of-order row dropped" in feed.describe


def test_out_of_order_sort_and_fail(tmp_path):
    feed = open_file_feed(_ooo(tmp_path), msgspec.structs.replace(CFG, out_of_order="sort"), "X")
    _, t = all_ticks(feed)
    assert t["price"].tolist() == [2, 1, 3, 4] and np.all(np.diff(t["ts_ns"]) >= 0)
    with pytest.raises(FeedError, match="line 3"):
        open_file_feed(_ooo(tmp_path), msgspec.structs.replace(CFG, out_of_order="fail"), "X")


def test_repeated_bar_time_is_dropped(tmp_path):
    p = write(tmp_path, "timestamp,open,high,low,close\n2024-01-01 00:00:00,1,2,1,2\n"
                        "2024-01-01 00:00:00,1,3,1,3\n2024-01-01 00:01:00,2,2,1,1\n")
    feed = open_file_feed(p, CFG, "X")
    assert feed.stats.out_of_order == 1 and feed.stats.ticks == 8


# ---- timestamps, grids, config


@settings(max_examples=25, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 12, 31)),
       st.integers(0, 999_999))
def test_timestamp_layouts_agree(dt, micro):
    dt = dt.replace(microsecond=micro)
    want = int(np.datetime64(dt, "us").astype("datetime64[ns]").astype(np.int64))
    iso = dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    compact = dt.strftime("%Y%m%d %H%M%S") + f"{micro:06d}"
    zoned = (dt + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+02:00"
    for text in (iso, compact, zoned):
        got, bad = parse_timestamps(pa.array([text, text]))  # fast paths
        assert not bad.any() and got.tolist() == [want, want], text
        got, bad = parse_timestamps(pa.array([text, "junk"]))  # per-row fallback
        assert got[0] == want and bad.tolist() == [False, True], text


def test_numeric_epochs_pick_their_unit():
    s = 1_600_000_000
    for scale in (1, 1_000, 1_000_000, 1_000_000_000):
        got, bad = parse_timestamps(pa.array([str(s * scale)]))
        assert got[0] == s * 1_000_000_000 and not bad[0]
    got, _ = parse_timestamps(pa.array(["1600000000.25"]))
    assert got[0] == s * 1_000_000_000 + 250_000_000


def test_grid_inference_is_exact_for_large_prices():
    assert infer_step(np.array([39432.48, 39432.5]))[0] == Decimal("0.01")
    assert infer_step(np.array([46319.0, 43613.875]))[0] == Decimal("0.001")
    assert infer_step(np.array([2300413.7295, 420687.75197499996]))[0] == Decimal("1E-6")
    ints, ok = to_grid(np.array([39432.48, 39432.4, np.nan]), Decimal("0.1"))
    assert ok.tolist() == [False, True, False] and ints[1] == 394324


def test_config_errors_name_the_dotted_key():
    for raw, key in (({"columns": {"price": -1}}, "feed.columns.price"),
                     ({"out_of_order": "skip"}, "feed.out_of_order"),
                     ({"batch_size": 0}, "feed.batch_size"),
                     ({"timezone": "Mars/Base"}, "feed.timezone"),
                     ({"synthetic": {"n_ticks": 0}}, "feed.synthetic.n_ticks"),
                     ({"synthetic": {"start_price": "100.005"}}, "feed.synthetic.start_price")):
        with pytest.raises(msgspec.ValidationError, match=f"config key '{key}'"):
            msgspec.convert(raw, FeedConfig)
    with pytest.raises(ConfigError):
        FeedConfig(ts_format="%d/%m/%Y %f %H")
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"colums": {}}, FeedConfig)
