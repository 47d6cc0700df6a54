"""A replay through the CLI writes tearsheet.html beside report.json: the report says why it has
no annualised Sharpe on a short sample, the tearsheet's trades carry the fills' decision ids, and
neither plotly nor tqdm is imported by the replay runner."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import structlog

from himari.daemon.cli import main
from himari.daemon.report.tearsheet import decode


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    structlog.reset_defaults()


class Figs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figs: dict[str, dict] = {}
        self._id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("type") == "application/json":
            self._id = str(a["id"])

    def handle_endtag(self, tag: str) -> None:
        self._id = None

    def handle_data(self, data: str) -> None:
        if self._id:
            self.figs[self._id] = json.loads(data)


def test_replay_writes_the_tearsheet_and_an_honest_sharpe(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "equity.html").write_text("an earlier version's chart")
    # The EMA cross, pinned: it trades within 30,000 ticks (the default ensemble needs a week).
    args = ["replay", "--out", str(out), "--quiet", "--set", "feed.synthetic.n_ticks=30000",
            "--set", 'strategy.name="ema_cross"', "--set", "strategy.params.bar_spec=\"20t\"",
            "--set", "log.level=\"warning\"",
            "--set", "replay.progress=false"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["files"]["tearsheet"] == report["files"]["equity"] == str(out / "tearsheet.html")
    assert not (out / "equity.html").exists() and (out / "previous" / "equity.html").exists()
    assert report["sharpe"] is None  # a few hours of data: no annualised figure, and it says so
    assert report["sharpe_note"].startswith("insufficient data for an annualised Sharpe")
    perf = report["performance"]
    assert perf["daily_returns"] < perf["min_daily_returns"] == 20
    assert perf["calendar"] in ("24/7", "sessions") and perf["periods_per_year"] in (365, 252)
    assert report["seconds"]["tearsheet"] > 0
    # the throughput figure ends before the tearsheet is written
    assert report["ticks_per_second"] == pytest.approx(
        report["ticks"] / report["seconds"]["replay_to_report"], rel=1e-3)

    with (out / "fills.csv").open() as fh:
        fills = list(csv.DictReader(fh))
    assert fills and all(f["decision_id"] for f in fills)
    figs = Figs()
    figs.feed((out / "tearsheet.html").read_text(encoding="utf-8"))
    table = figs.figs["fig-trades-json"]["data"][0]
    cols = dict(zip(table["header"]["values"], table["cells"]["values"]))
    assert len(cols["entry decision"]) == report["round_trips"] > 0
    fill_ids = [f["decision_id"] for f in fills]
    assert cols["entry decision"][0] == fill_ids[0]
    assert set(cols["entry decision"]) | set(cols["exit decision"]) <= set(fill_ids)
    price = figs.figs["fig-price-json"]["data"]
    markers = sum(decode(t["x"]).shape[0] for t in price[1:])  # a reversal is marked twice
    assert len(fills) <= markers <= 2 * len(fills)


def test_the_replay_runner_imports_neither_plotly_nor_tqdm() -> None:
    code = ("import sys, himari.daemon.runners.replay, himari.daemon.report.build; "
            "bad = [m for m in ('plotly', 'tqdm', 'pandas', 'empyrical') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
