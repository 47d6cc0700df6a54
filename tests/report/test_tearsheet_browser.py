"""The tearsheet opens in a headless browser with every section drawn.

Needs a Chromium-family browser (Debian's `chromium` package works offline: `apt-get install
chromium`; or set HIMARI_BROWSER to a binary). Skipped, saying so, when none is installed. The
browser runs plotly.js from the page itself (no network) and `--dump-dom` returns the DOM after
the scripts ran: each figure's div must hold plotly's drawn SVG with its lines, bars, markers and
table cells."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from himari.daemon.report.tearsheet import FIGURES

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
              "chrome-headless-shell", "headless_shell")


def find_browser() -> str | None:
    explicit = os.environ.get("HIMARI_BROWSER")
    if explicit:
        return explicit if shutil.which(explicit) or Path(explicit).is_file() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def dump_dom(browser: str, page: Path, tmp: Path) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
           "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           "--virtual-time-budget=20000", "--dump-dom", page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def figure_dom(dom: str, name: str) -> str:
    start = dom.index(f'id="fig-{name}"')
    return dom[start:dom.index(f'id="fig-{name}-json"', start)]


def test_every_section_is_drawn_in_a_headless_browser(tearsheet_file: Path,
                                                      tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip("no headless browser: install Debian's chromium (apt-get install chromium) "
                    "or set HIMARI_BROWSER to a Chromium-family binary")
    dom = dump_dom(browser, tearsheet_file, tmp_path)
    for section in ("summary", *FIGURES):
        assert f'<section id="{section}"' in dom, section
    drawn = {name: figure_dom(dom, name) for name in FIGURES}
    for name, seg in drawn.items():
        assert "js-plotly-plot" in seg and 'class="main-svg"' in seg, f"{name} not drawn"

    def lines(seg: str) -> int:  # scatter lines with a drawn path
        return len(re.findall(r'class="js-line"[^>]*d="M', seg))

    assert lines(drawn["equity"]) >= 2  # strategy and buy-and-hold
    assert lines(drawn["drawdown"]) >= 1 and "js-fill" in drawn["drawdown"]
    assert lines(drawn["price"]) >= 1
    assert drawn["price"].count('class="point"') >= 4  # the fills' markers
    assert lines(drawn["rolling"]) >= 1
    assert drawn["daily"].count('class="point"') >= 40  # one bar a day
    assert drawn["monthly"].count('class="point"') >= 2
    for decision in ("D-R-1", "D-R-2", "D-R-3"):
        assert decision in drawn["trades"]
    assert "Sharpe (daily, annualised)" in dom
