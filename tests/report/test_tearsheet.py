"""The tearsheet page, read back as a parser sees it: every section present, and every figure's
JSON holds the traces and the data it should (equity, buy-and-hold, drawdown, fills, returns,
trades with decision ids); plotly.js inlined, nothing fetched from the network."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from himari.daemon.report import stats
from himari.daemon.report.tearsheet import (FIGURES, MAX_POINTS, SECTIONS, TearsheetInput, bucket,
                                            decode, figures)


class Page(HTMLParser):
    """Sections in order, each figure's JSON by name, the scripts, any external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.divs: set[str] = set()
        self.figs: dict[str, dict] = {}
        self.scripts: list[str] = []
        self.external: list[str] = []
        self._json_id: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(str(a[key]))
        if tag == "section":
            self.sections.append(str(a.get("id")))
        elif tag == "div" and a.get("id"):
            self.divs.add(str(a["id"]))
        elif tag == "script":
            self._in_script = True
            if a.get("type") == "application/json":
                self._json_id = str(a["id"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script, self._json_id = False, None

    def handle_data(self, data: str) -> None:
        if self._json_id is not None:
            self.figs[self._json_id] = json.loads(data)
        elif self._in_script:
            self.scripts.append(data)


def read(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def trace(fig: dict, name_start: str) -> dict:
    found = [t for t in fig["data"] if t.get("name", "").startswith(name_start)]
    assert len(found) == 1, (name_start, [t.get("name") for t in fig["data"]])
    return found[0]


def test_every_section_is_there_with_its_figure(tearsheet_file: Path) -> None:
    page = read(tearsheet_file)
    assert page.sections == list(SECTIONS)
    for name in FIGURES:
        assert f"fig-{name}" in page.divs
        assert f"fig-{name}-json" in page.figs
    assert page.external == []  # self-contained: works offline
    bundle = max(page.scripts, key=len)
    assert len(bundle) > 1_000_000 and "plotly.js" in bundle[:2000]
    assert any("Plotly.newPlot" in s for s in page.scripts)
    html = tearsheet_file.read_text(encoding="utf-8")
    assert "a note with &lt;markup&gt; &amp; ampersand" in html  # escaped, not injected
    assert "1.2345" in html


def test_equity_against_buy_and_hold_with_the_same_starting_cash(
        tearsheet_file: Path, tearsheet_input: TearsheetInput) -> None:
    d = tearsheet_input
    fig = read(tearsheet_file).figs["fig-equity-json"]
    strat, bh = trace(fig, "strategy"), trace(fig, "buy-and-hold BTCUSD")
    np.testing.assert_array_equal(decode(strat["y"]), d.equity)
    np.testing.assert_array_equal(decode(strat["x"]), d.ts_ns / 1e6)  # epoch ms on a date axis
    want = d.starting_cash * d.price_ticks / d.price_ticks[0]
    np.testing.assert_allclose(decode(bh["y"]), want, rtol=1e-12)
    assert decode(bh["y"])[0] == pytest.approx(d.starting_cash)
    assert fig["layout"]["xaxis"]["type"] == "date"


def test_underwater_curve_reaches_the_max_drawdown(tearsheet_file: Path,
                                                   tearsheet_input: TearsheetInput) -> None:
    eq = tearsheet_input.equity
    y = decode(read(tearsheet_file).figs["fig-drawdown-json"]["data"][0]["y"])
    worst = float(np.min(eq / np.maximum.accumulate(eq) - 1.0)) * 100
    assert worst < 0
    assert float(y.min()) == pytest.approx(worst, rel=1e-12)
    assert float(y.max()) <= 0.0


def test_price_marks_every_entry_and_exit_with_its_decision(
        tearsheet_file: Path, tearsheet_input: TearsheetInput) -> None:
    d = tearsheet_input
    fig = read(tearsheet_file).figs["fig-price-json"]
    np.testing.assert_allclose(decode(trace(fig, "price")["y"]), d.price_ticks * 0.25)
    long_in, short_in = trace(fig, "long entry (1)"), trace(fig, "short entry (1)")
    exit_sell, exit_buy = trace(fig, "exit (sell) (1)"), trace(fig, "exit (buy) (1)")
    f1, f2, f3 = d.marks  # buy 2 (entry), sell 4 (reverse: exit and entry), buy 2 (exit)
    assert decode(long_in["x"]).tolist() == [f1.ts_ns / 1e6]
    assert decode(long_in["y"]).tolist() == [f1.price * 0.25]
    assert decode(short_in["x"]).tolist() == decode(exit_sell["x"]).tolist() == [f2.ts_ns / 1e6]
    assert decode(exit_buy["y"]).tolist() == [f3.price * 0.25]
    assert "decision D-R-1" in long_in["text"][0] and "decision D-R-3" in exit_buy["text"][0]


def test_returns_figures_hold_the_daily_and_monthly_returns(
        tearsheet_file: Path, tearsheet_input: TearsheetInput) -> None:
    d = tearsheet_input
    figs = read(tearsheet_file).figs
    daily = stats.daily_returns(d.ts_ns, d.equity, d.starting_cash)
    assert daily.returns.shape[0] == 40
    bars = figs["fig-daily-json"]["data"][0]
    np.testing.assert_allclose(decode(bars["y"]), daily.returns * 100, rtol=1e-12)
    np.testing.assert_array_equal(decode(bars["x"]), daily.day_ns / 1e6)
    monthly = figs["fig-monthly-json"]["data"][0]
    assert monthly["x"] == ["2024-01", "2024-02"]
    jan = np.prod(1 + daily.returns[:31]) - 1
    assert decode(monthly["y"])[0] == pytest.approx(jan * 100, rel=1e-9)
    rolling = figs["fig-rolling-json"]
    assert "annualised sqrt(365)" in rolling["layout"]["title"]["text"]  # 40 days, 24/7
    roll = decode(rolling["data"][0]["y"])
    np.testing.assert_allclose(roll, stats.rolling_sharpe(daily.returns, 20, 365), rtol=1e-12)


def test_a_short_replay_draws_a_per_bar_rolling_ratio_labelled_not_annualised(
        make_tearsheet_input) -> None:
    d = make_tearsheet_input(days=10)
    fig = figures(d)["rolling"]
    title = fig["layout"]["title"]["text"]
    assert "NOT annualised" in title and "per-bar" in title
    y = decode(fig["data"][0]["y"])
    window = 20  # 240 hourly bars // 20 = 12, raised to the minimum window of 20
    bar_r = np.diff(d.equity) / d.starting_cash
    np.testing.assert_allclose(y, stats.rolling_sharpe(bar_r, window, 1), rtol=1e-12)
    assert np.nanmax(np.abs(y)) < 5  # a per-bar ratio, not an annualised 800


def test_trade_table_lists_each_round_trip_with_its_decision_ids(
        tearsheet_file: Path) -> None:
    table = read(tearsheet_file).figs["fig-trades-json"]["data"][0]
    assert table["type"] == "table"
    cols = dict(zip(table["header"]["values"], table["cells"]["values"]))
    assert cols["entry decision"] == ["D-R-1", "D-R-2"]
    assert cols["exit decision"] == ["D-R-2", "D-R-3"]
    assert cols["side"] == ["long", "short"]
    assert cols["quantity"] == ["1.0", "1.0"]  # 2 lots of 0.5
    assert cols["net pnl"] == ["20.25", "18.75"]  # exact, as the book has them
    assert cols["opened (UTC)"][0] == "2024-01-01 10:30:00.000"


def test_every_figure_is_a_valid_plotly_figure(tearsheet_input: TearsheetInput) -> None:
    go = pytest.importorskip("plotly.graph_objects")
    for name, spec in figures(tearsheet_input).items():
        go.Figure(spec)  # raises on any property plotly does not know


def test_long_curves_are_bucketed_keeping_the_last_value_and_the_worst_drawdown() -> None:
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(size=50_000))
    last = bucket(values, MAX_POINTS, "last")
    low = bucket(values, MAX_POINTS, "min")
    assert last.shape[0] <= MAX_POINTS + 1 and low.shape[0] <= MAX_POINTS + 2
    assert last[0] == 0 and last[-1] == values.shape[0] - 1
    assert int(np.argmin(values)) in set(low.tolist())
    assert np.all(np.diff(low) > 0)
    np.testing.assert_array_equal(bucket(values[:100], MAX_POINTS, "min"), np.arange(100))
