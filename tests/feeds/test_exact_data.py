"""Issue 15, data in: exact timestamps, every side code, the tick from the price grid, files in
time order, no silent empty replay, config instruments for the synthetic stream, never-seen CSVs,
and fills stamped with the stream's exact nanoseconds."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from himari.daemon.cli import main
from himari.daemon.config import parse_config
from himari.daemon.feeds.base import FeedError
from himari.daemon.feeds.config import FeedConfig
from himari.daemon.feeds.files import open_file_feed
from himari.daemon.feeds.synthetic import SyntheticFeed
from himari.daemon.feeds.timeparse import parse_timestamps
from himari.daemon.sources import open_source

CFG = FeedConfig(kind="file")
QUIET = ["--set", "log.level=warning", "--set", "replay.progress=false"]
# Replays that must trade on a short file pin the EMA cross (the default ensemble needs a week).
EMA = ["--set", 'strategy.name="ema_cross"']
T0 = 1_704_067_200_123_456_789  # 2024-01-01T00:00:00.123456789Z: 19 digits, not a float64


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def ticks(feed) -> dict[str, np.ndarray]:
    bs = list(feed.batches())
    return {f: np.concatenate([getattr(b, f) for b in bs]) for f in ("ts_ns", "price", "size", "side")}


def source_ticks(src) -> np.ndarray:
    return np.concatenate([b.ts_ns for b in src.batches()])


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ---- 1. 19-digit nanosecond epochs are exact


def test_nanosecond_epochs_parse_exactly_and_stay_distinct(tmp_path):
    stamps = [T0, T0 + 1, T0 + 2, T0 + 129, 9_000_000_000_000_000_001 - 7]
    p = write(tmp_path / "t.csv", "ts_ns,price,size,side\n" +
              "".join(f"{t},100.25,1,B\n" for t in stamps))
    t = ticks(open_file_feed(p, CFG, "X"))
    assert t["ts_ns"].tolist() == stamps  # float64 would merge the first three
    assert len(set(t["ts_ns"].tolist())) == len(stamps)


def test_nanosecond_epochs_are_exact_on_the_text_path_too(tmp_path):
    # a corrupt time makes the integer column fail: the text fallback must still be exact
    rows = [f"{T0 + i},1.5\n" for i in range(30)]
    rows[1] = "not-a-time,1.5\n"  # line 3
    feed = open_file_feed(write(tmp_path / "t.csv", "ts_ns,price\n" + "".join(rows)), CFG, "X")
    assert ticks(feed)["ts_ns"].tolist() == [T0] + [T0 + i for i in range(2, 30)]
    assert feed.stats.malformed == 1 and feed.stats.malformed_rows[0][0] == 3
    ns, bad = parse_timestamps(pa.array([str(T0), str(T0 + 3), f"{T0}.5"]), "ns")
    assert ns.tolist() == [T0, T0 + 3, T0] and not bad.any()


# ---- 2. side codes


@pytest.mark.parametrize("codes,expected", [
    (["B", "S", "N", "b", "s", "n"], [1, -1, 0, 1, -1, 0]),
    (["BUY", "SELL", "NONE", "buy", "sell", ""], [1, -1, 0, 1, -1, 0]),
])
def test_aggressor_codes_keep_every_tick(tmp_path, codes, expected):
    rows = "".join(f"{T0 + i},100.5,1,{c}\n" for i, c in enumerate(codes))
    feed = open_file_feed(write(tmp_path / "t.csv", "ts_ns,price,size,side\n" + rows), CFG, "X")
    assert ticks(feed)["side"].tolist() == expected
    assert feed.stats.malformed == 0 and feed.stats.ticks == len(codes)


def test_buyer_maker_flag_means_the_aggressor_sold(tmp_path):
    p = write(tmp_path / "t.csv", "time,price,qty,is_buyer_maker\n"
              f"{T0},10.5,1,true\n{T0 + 1},10.5,1,false\n{T0 + 2},10.5,1,True\n")
    assert ticks(open_file_feed(p, CFG, "X"))["side"].tolist() == [-1, 1, -1]


def test_unknown_codes_are_side_0_and_reported_and_a_mapping_names_them(tmp_path):
    p = write(tmp_path / "t.csv", "ts_ns,price,size,side\n"
              f"{T0},100.5,1,A\n{T0 + 1},100.5,1,V\n{T0 + 2},100.5,1,X\n{T0 + 3},100.5,1,B\n")
    feed = open_file_feed(p, CFG, "X")
    assert ticks(feed)["side"].tolist() == [0, 0, 0, 1]  # kept, never dropped
    assert feed.stats.malformed == 0 and feed.stats.side_unknown == 3
    assert sorted(feed.stats.side_codes_unknown) == ["A", "V", "X"]
    assert "unknown side code" in feed.describe and "feed.side_codes" in feed.describe
    mapped = msgspec.convert({"kind": "file", "side_codes": {"a": 1, "V": -1, "x": 0}}, FeedConfig)
    feed = open_file_feed(p, mapped, "X")
    assert ticks(feed)["side"].tolist() == [1, -1, 0, 1] and feed.stats.side_unknown == 0


def test_side_codes_config_is_checked():
    with pytest.raises(Exception, match="feed.side_codes.A"):
        parse_config('[feed.side_codes]\nA = 2\n')
    with pytest.raises(Exception, match="same code"):
        parse_config('[feed.side_codes]\nA = 1\na = -1\n')


# ---- 3. tick from the grid; finer prices counted, never rounded


def test_tick_is_the_greatest_common_step_not_the_decimals(tmp_path):
    prices = [100.25, 100.50, 101.00, 99.75, 100.00, 100.75]
    p = write(tmp_path / "t.csv", "ts_ns,price\n" +
              "".join(f"{T0 + i},{x:.2f}\n" for i, x in enumerate(prices)))
    feed = open_file_feed(p, CFG, "X")
    assert feed.instrument.tick_size == Decimal("0.25")
    assert ticks(feed)["price"].tolist() == [int(x * 4) for x in prices]
    p5 = write(tmp_path / "five.csv", "ts_ns,price\n" + "".join(
        f"{T0 + i},{x}\n" for i, x in enumerate([4105, 4110, 4095, 4120])))
    assert open_file_feed(p5, CFG, "X").instrument.tick_size == Decimal(5)


def test_prices_finer_than_the_configured_tick_are_counted_in_the_report(capsys, tmp_path):
    rows = [f"{T0 + i * 1_000_000_000},{100 + (i % 7) * 0.25:.2f},1" for i in range(200)]
    rows[50] = f"{T0 + 50 * 1_000_000_000},100.10,1"  # off the 0.25 grid
    rows[60] = f"{T0 + 60 * 1_000_000_000},100.30,1"
    p = write(tmp_path / "t.csv", "ts_ns,price,size\n" + "\n".join(rows) + "\n")
    out = tmp_path / "o"
    code, _, err = cli(capsys, "replay", str(p), "--out", str(out), "--quiet", *QUIET, *EMA,
                       "--set", 'instrument.tick_size="0.25"', "--set", "strategy.params.bar_spec=10t")
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    inp = rep["inputs"][0]
    assert inp["off_tick"] == 2 and rep["malformed_rows"] == 2 and rep["ticks"] == 198
    assert "2 prices finer than the tick size 0.25 refused" in inp["description"]


# ---- 4. several files in time order


def _two_files(tmp_path: Path, overlap: bool = False) -> tuple[Path, Path]:
    early = write(tmp_path / "day1.csv", "ts_ns,price,size\n" +
                  "".join(f"{T0 + i * 1000},100.5,1\n" for i in range(10)))
    start = T0 + 5_500 if overlap else T0 + 100_000
    late = write(tmp_path / "day2.csv", "ts_ns,price,size\n" +
                 "".join(f"{start + i * 1000},101.5,1\n" for i in range(10)))
    return early, late


@pytest.mark.parametrize("policy", ["drop", "sort"])
def test_files_given_in_reverse_order_replay_in_time_order(tmp_path, policy):
    early, late = _two_files(tmp_path)
    cfg = parse_config(f'[feed]\nout_of_order = "{policy}"\n')
    src = open_source(cfg, [str(late), str(early)])
    ts = source_ticks(src)
    assert len(ts) == 20 and np.all(np.diff(ts) >= 0)
    assert [d["input"] for d in src.describe()] == [str(early), str(late)]


def test_files_out_of_order_are_refused_under_fail(capsys, tmp_path):
    early, late = _two_files(tmp_path)
    cfg = parse_config('[feed]\nout_of_order = "fail"\n')
    with pytest.raises(FeedError, match="day1.csv starts at .* before day2.csv"):
        open_source(cfg, [str(late), str(early)])
    assert len(source_ticks(open_source(cfg, [str(early), str(late)]))) == 20
    code, _, err = cli(capsys, "replay", str(late), str(early), "--out", str(tmp_path / "o"),
                       "--quiet", *QUIET, "--set", 'feed.out_of_order="fail"')
    assert code == 2 and "day1.csv" in err and "day2.csv" in err and "Traceback" not in err


def test_overlapping_files_are_merged_under_sort_and_trimmed_under_drop(tmp_path):
    early, late = _two_files(tmp_path, overlap=True)
    merged = source_ticks(open_source(parse_config('[feed]\nout_of_order = "sort"\n'),
                                      [str(early), str(late)]))
    assert len(merged) == 20 and np.all(np.diff(merged) >= 0)
    src = open_source(parse_config('[feed]\nout_of_order = "drop"\n'), [str(early), str(late)])
    dropped = source_ticks(src)
    assert np.all(np.diff(dropped) >= 0) and len(dropped) == 20 - 4  # 5.5, 6.5, 7.5, 8.5 us < 9 us
    assert src.describe()[1]["out_of_order"] == 4


# ---- 5. nothing to replay is an error; file feeds need files; instruments for synthetic


def test_header_only_file_exits_2_naming_it(capsys, tmp_path):
    p = write(tmp_path / "empty.csv", "ts_ns,price,size,side\n")
    code, _, err = cli(capsys, "replay", str(p), "--out", str(tmp_path / "o"), "--quiet", *QUIET)
    assert code == 2 and "empty.csv" in err and "no data rows" in err and "Traceback" not in err


def test_all_rows_malformed_exits_2_naming_the_first_bad_lines(capsys, tmp_path):
    p = write(tmp_path / "bad.csv", "ts_ns,price,size\n" +
              "".join(f"{T0 + i},abc,1\n" for i in range(20)))
    code, _, err = cli(capsys, "replay", str(p), "--out", str(tmp_path / "o"), "--quiet", *QUIET)
    assert code == 2 and "bad.csv" in err and "line 2:" in err and "line 3:" in err
    assert "unparseable price" in err and "Traceback" not in err


def test_file_feed_without_paths_is_a_config_error(capsys, tmp_path, make_config):
    cfg = make_config('[feed]\nkind = "file"\n')
    for argv in (["check-config", str(cfg)],
                 ["replay", "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet", *QUIET]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "feed.paths" in err and "Traceback" not in err


def test_instrument_settings_apply_to_the_synthetic_stream():
    cfg = parse_config('[instrument]\ntick_size = "0.05"\nlot_size = "0.1"\n'
                       '[feed.synthetic]\nn_ticks = 2000\n')
    src = open_source(cfg, [])
    assert src.instrument.tick_size == Decimal("0.05") and src.instrument.lot_size == Decimal("0.1")
    first = next(iter(src.batches()))
    assert first.price[0] == 2000  # start price 100.00 on a 0.05 grid
    with pytest.raises(Exception, match="instrument.tick_size"):
        open_source(parse_config('[instrument]\ntick_size = "0.3"\n'), [])


@pytest.fixture
def make_config(tmp_path: Path):
    return lambda text: write(tmp_path / "c.toml", text)


# ---- a CSV the project has never seen


NEVER_SEEN = ("Zeitstempel;Kurs;Stueck;Richtung\n" +
              "".join(f"{T0 + i * 7};{250 + (i % 9) * 0.5:.2f};{1 + i % 4};{'KVX'[i % 3]}\n"
                      for i in range(300)))


def test_a_never_seen_csv_replays_every_row_without_config(tmp_path):
    feed = open_file_feed(write(tmp_path / "fremd.csv", NEVER_SEEN), CFG, "X")
    t = ticks(feed)
    assert feed.kind == "trades" and feed.stats.ticks == 300 and feed.stats.malformed == 0
    assert t["ts_ns"].tolist() == [T0 + i * 7 for i in range(300)]
    assert feed.instrument.tick_size == Decimal("0.5")
    assert t["size"].tolist() == [1 + i % 4 for i in range(300)]
    assert np.all(t["side"] == 0) and feed.stats.side_unknown == 300  # codes unknown, rows kept


def test_a_never_seen_csv_gets_its_sides_from_one_mapping(capsys, tmp_path):
    data = write(tmp_path / "fremd.csv", NEVER_SEEN)
    cfg = write(tmp_path / "c.toml", "[feed.side_codes]\nK = 1\nV = -1\nX = 0\n")
    feed = open_file_feed(data, parse_config(cfg.read_text()).feed, "X")
    assert ticks(feed)["side"].tolist() == [(1, -1, 0)[i % 3] for i in range(300)]
    out = tmp_path / "o"
    code, _, err = cli(capsys, "replay", str(data), "--config", str(cfg), "--out", str(out),
                       "--quiet", *QUIET, *EMA, "--set", "strategy.params.bar_spec=10t")
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["ticks"] == 300 and rep["malformed_rows"] == 0


# ---- the reference stream's exact nanoseconds reach the fills


def test_fills_carry_the_streams_exact_nanoseconds(capsys, tmp_path):
    n = 40_000
    syn = SyntheticFeed(msgspec.convert({"synthetic": {"n_ticks": n, "seed": 3}}, FeedConfig))
    arr = syn.arrays()
    assert np.any(arr.ts_ns % 1000 != 0)  # sub-microsecond stamps: float64 would lose them
    data = tmp_path / "ref.csv"
    with data.open("w") as fh:
        fh.write("ts_ns,price,size,side\n")
        fh.writelines(f"{t},{p / 100:.2f},{s},{'B' if d > 0 else 'S'}\n"
                      for t, p, s, d in zip(arr.ts_ns.tolist(), arr.price.tolist(),
                                            arr.size.tolist(), arr.side.tolist()))
    common = ["--quiet", *QUIET, *EMA, "--set", "strategy.params.bar_spec=100t",
              "--set", 'instrument.tick_size="0.01"', "--set", 'instrument.lot_size="1"',
              "--set", "feed.synthetic.n_ticks=40000", "--set", "feed.synthetic.seed=3"]
    code, _, err = cli(capsys, "replay", str(data), "--out", str(tmp_path / "csv"), *common)
    assert code == 0, err
    code, _, err = cli(capsys, "replay", "--out", str(tmp_path / "syn"), *common)
    assert code == 0, err

    def fills(d: str) -> list[dict[str, str]]:
        with (tmp_path / d / "fills.csv").open() as fh:
            return list(csv.DictReader(fh))

    from_csv, from_syn = fills("csv"), fills("syn")
    assert len(from_csv) > 10
    stamps = set(arr.ts_ns.tolist())
    assert all(int(f["ts_ns"]) in stamps for f in from_csv)
    key = ("ts_ns", "side", "quantity", "price")
    assert [tuple(f[k] for k in key) for f in from_csv] == [tuple(f[k] for k in key) for f in from_syn]


# ---- the grid inference, exactly


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from himari.daemon.feeds.values import decimal_gcd, infer_tick, to_grid  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(step_units=st.integers(1, 999), decimals=st.integers(0, 6),
       multiples=st.lists(st.integers(1, 10**7), min_size=2, max_size=50))
def test_infer_tick_finds_the_grid_of_any_step(step_units, decimals, multiples):
    import math

    step = Decimal(step_units).scaleb(-decimals)
    prices = np.array([float(step * m) for m in multiples])
    tick, exact = infer_tick(prices)
    assert exact
    g = math.gcd(*multiples)
    if min(multiples) == max(multiples):  # one distinct price: no grid to see, the decimals rule
        assert (step * multiples[0]) % tick == 0
    else:
        assert tick == step * g
    ints, on = to_grid(prices, tick)
    assert on.all() and [Decimal(int(i)) * tick for i in ints] == [step * m for m in multiples]


def test_decimal_gcd_is_exact():
    assert decimal_gcd([Decimal("0.5"), Decimal("0.25")]) == Decimal("0.25")
    assert decimal_gcd([Decimal("0.01"), Decimal("0.25"), Decimal("1")]) == Decimal("0.01")
    assert decimal_gcd([Decimal("5"), Decimal("15")]) == Decimal("5")


def test_an_instruments_files_share_the_finest_common_grid(tmp_path):
    a = write(tmp_path / "a.csv", "ts_ns,price\n" + "".join(
        f"{T0 + i},{100 + (i % 4) * 0.5}\n" for i in range(20)))  # 0.5 grid
    b = write(tmp_path / "b.csv", "ts_ns,price\n" + "".join(
        f"{T0 + 100 + i},{100 + (i % 4) * 0.25}\n" for i in range(20)))  # 0.25 grid
    src = open_source(parse_config(""), [str(a), str(b)])
    assert src.instrument.tick_size == Decimal("0.25")
    prices = np.concatenate([x.price for x in src.batches()])
    assert prices[:4].tolist() == [400, 402, 404, 406] and prices[20:24].tolist() == [400, 401, 402, 403]
    assert "the grid common to the instrument's files" in src.describe()[0]["description"]


def test_a_tiny_price_never_rounds_to_zero():
    # found by the property test above: 1e-6 lies within a millionth of a step of 0 on a grid of 1
    tick, exact = infer_tick(np.array([1e-6, 1e-6]))
    assert exact and tick == Decimal("0.000001")
    ints, on = to_grid(np.array([1e-6]), Decimal(1))
    assert not on.all()  # off the grid of 1, never silently 0
