"""The command line's contract: exit codes and messages for bad config and bad data, the shipped
configs, every recorded data file, and recomputable fills."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest

from himari.daemon.cli import main

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"

QUIET = ["--set", "log.level=warning", "--set", "replay.progress=false"]
# Replays that must trade on a short file pin the EMA cross (the default ensemble needs a week).
EMA = ["--set", 'strategy.name="ema_cross"']
EMA_TOML = '[strategy]\nname = "ema_cross"\n'


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run(capsys, "version")
    assert code == 0 and out.startswith("himari ")


@pytest.mark.parametrize("name", ["default.toml", "replay.toml", "paper-sim.toml", "paper.toml"])
def test_shipped_configs_are_valid(capsys, monkeypatch, name):
    # paper.toml's venue reads its keys from the environment; check-config checks they are set
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret")
    code, out, err = run(capsys, "check-config", str(REPO / "config" / name))
    assert code == 0, err
    assert "ok" in out


@pytest.mark.parametrize("text,key,fragment", [
    ("[risk]\nmax_order_quantitty = 3\n", "risk.max_order_quantitty", "unknown key"),
    ("[risk]\nmax_orders_per_minute = \"many\"\n", "risk.max_orders_per_minute", "Expected `int`"),
    ("[risk]\nmax_drawdown_pct = -1.0\n", "risk.max_drawdown_pct", "(0.0, 100.0]"),
    (EMA_TOML + "[strategy.params]\nfast = 30\nslow = 10\n", "strategy.params.fast",
     "smaller than slow"),
    (EMA_TOML + "[strategy.params]\nbar_spec = \"5 parsecs\"\n", "strategy.params.bar_spec",
     "bar spec"),
    # the default strategy (the ensemble) names the EMA's keys it does not take
    ("[strategy.params]\nbar_spec = \"20t\"\n", "strategy.params.bar_spec", "unknown key"),
    # the ensemble without its matrices would never decide: refused, not a silent idle run
    ("[matrices]\nenabled = false\n", "matrices.enabled", "'ensemble'"),
    ("[venue.params]\nlatency_ms = -3\n", "venue.params.latency_ms", "[0.0"),
    ("[strategy]\nname = \"moonshot\"\n", "strategy.name", "ema_cross"),
    ("[matrices.tactical]\nmomentum_n = 0\n", "matrices.tactical.momentum_n", ""),
    ("[broker]\napi_key = \"abc\"\n", "broker.api_key", "environment"),
    ("[feed\n", "(file)", "valid TOML"),
])
def test_bad_config_refuses_to_start_naming_the_key(capsys, tmp_path, text, key, fragment):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    for argv in (["check-config", str(cfg)], ["replay", "--config", str(cfg), "--out",
                                               str(tmp_path / "o"), "--quiet"]):
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert f"'{key}'" in err and fragment in err
        assert "Traceback" not in err
    assert "abc" not in err  # a secret is never echoed


def test_a_config_that_is_not_utf8_exits_2_naming_the_file(capsys, tmp_path):
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes("[instrument]\nid = \"caf\u00e9\"\n".encode("latin-1"))
    for argv in (["check-config", str(cfg)], ["run", "--config", str(cfg)]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and str(cfg) in err and "UTF-8" in err and "0xe9" in err
        assert "Traceback" not in err


def test_bad_usage_exits_2(capsys, tmp_path):
    assert run(capsys, "replay", str(tmp_path / "missing.csv"))[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "replay", "--set", "nonsense")[0] == 2


def test_paper_modes_accept_what_runs_and_refuse_what_does_not(capsys, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key")  # check-config checks the keys are set
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret")
    code, out, err = run(capsys, "check-config", str(REPO / "config" / "paper.toml"))
    assert code == 0 and "venue alpaca" in out, err
    # the sandbox is a broker the alpaca venue points at, not a venue of its own
    code, _, err = run(capsys, "run", "--config", str(REPO / "config" / "paper.toml"),
                       "--set", "venue.name=sandbox")
    assert code == 2 and "venue.name" in err and "alpaca" in err and "Traceback" not in err
    # live trading is refused in this version, and a broker venue needs the broker's data
    code, _, err = run(capsys, "run", "--config", str(REPO / "config" / "paper-sim.toml"),
                       "--set", "daemon.mode=live")
    assert code == 2 and "daemon.mode" in err and "Traceback" not in err
    code, _, err = run(capsys, "run", "--config", str(REPO / "config" / "paper.toml"),
                       "--set", "feed.kind=synthetic")
    assert code == 2 and "feed.kind" in err and "Traceback" not in err


def write_trades(path: Path, rows: list[str]) -> Path:
    path.write_text("timestamp,price,quantity\n" + "\n".join(rows) + "\n")
    return path


def good_rows(n: int, start: int = 1_700_000_000_000) -> list[str]:
    return [f"{start + i * 1000},{100 + (i % 17) * 0.25 + (i // 50) * 0.5:.2f},{1 + i % 3}"
            for i in range(n)]


def test_corrupt_row_and_nan_price_are_counted_with_line_numbers(capsys, tmp_path):
    rows = good_rows(400)
    rows[9] = "1700000009000,abc,1"  # line 11 of the file
    rows[19] = "1700000019000,nan,1"  # line 21
    rows[29] = "1700000029000,100.25"  # line 31: a missing field
    data = write_trades(tmp_path / "t.csv", rows)
    out = tmp_path / "o"
    code, _, err = run(capsys, "replay", str(data), "--out", str(out), "--quiet", *QUIET, *EMA,
                       "--set", "strategy.params.bar_spec=10t")
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["malformed_rows"] == 3
    assert rep["ticks"] == 397
    lines = {row[0] for row in rep["inputs"][0]["malformed_examples"]}
    assert lines == {11, 21, 31}


def test_unknown_column_is_a_clear_error(capsys, tmp_path):
    data = write_trades(tmp_path / "t.csv", good_rows(50))
    code, _, err = run(capsys, "replay", str(data), "--quiet", "--out", str(tmp_path / "o"),
                       *QUIET, "--set", "feed.columns.price=\"last\"")
    assert code == 2
    assert "last" in err and "price" in err and "Traceback" not in err


DATA_FILES = ["btc-perp-20211231-20220201_1m.csv", "gbpusd-m1-bid-2012.csv", "quote_tick_data.csv",
              "usdjpy-ticks.csv", "btcusdt-trades.parquet"]


@pytest.mark.parametrize("name", DATA_FILES)
def test_every_recorded_file_replays_with_recomputable_fills(capsys, tmp_path, name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"recorded data not found at {path} (shared/data is not beside the repo)")
    out = tmp_path / "o"
    # Small bars so even the 1,000-tick file gets past the slow EMA's warm-up.
    # USD/JPY is quoted in yen: the USD account needs a stated rate (USD per JPY).
    fx = ["--set", "account.fx_rates.JPY=\"0.0125\""] if name.startswith("usdjpy") else []
    code, _, err = run(capsys, "replay", str(path), "--out", str(out), "--quiet", *QUIET, *EMA,
                       "--set", "strategy.params.bar_spec=20t",
                       "--set", "account.starting_cash=\"10000000\"",
                       "--set", "risk.max_notional=\"100000000\"", *fx)
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["ticks"] > 0 and rep["malformed_rows"] == 0
    assert rep["fills"] > 0, rep["risk"]
    desc = rep["inputs"][0]["description"]
    if rep["inputs"][0]["kind"] == "bars":
        assert "replayed as 4 ticks per bar" in desc
    with (out / "fills.csv").open() as fh:
        fills = list(csv.DictReader(fh))
    assert len(fills) == rep["fills"]
    signed = [(1 if f["side"] == "BUY" else -1) * Decimal(f["quantity"]) for f in fills]
    assert sum(signed) == 0  # flattened on stop
    cash = -sum(q * Decimal(f["price"]) for q, f in zip(signed, fills))
    fees = sum(Decimal(f["fee"]) for f in fills)
    rate = Decimal(rep["instruments"][rep["instrument"]["id"]]["fx_rate"])
    assert rep["instrument"]["currency"] == ("JPY" if name.startswith("usdjpy") else "USD")
    assert Decimal(rep["pnl"]) == (cash * Decimal(rep["instrument"]["multiplier"]) - fees) * rate


def test_a_currency_mix_without_a_stated_rate_refuses_to_start(capsys, tmp_path):
    path = DATA / "usdjpy-ticks.csv"
    if not path.exists():
        pytest.skip(f"recorded data not found at {path} (shared/data is not beside the repo)")
    code, _, err = run(capsys, "replay", str(path), "--out", str(tmp_path / "o"), "--quiet", *QUIET)
    assert code == 2
    assert "account.fx_rates" in err and "JPY" in err and "Traceback" not in err
