from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def write_config(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def make_config(tmp_path: Path):
    return lambda text, name="c.toml": write_config(tmp_path, text, name)


@pytest.fixture
def small_synthetic(tmp_path: Path) -> Path:
    """A quick synthetic replay: 120,000 ticks, EMA cross on 100-tick bars (pinned: the default
    strategy, the ensemble, needs a week of data before it decides)."""
    return write_config(tmp_path, """
[feed.synthetic]
n_ticks = 120000
seed = 11
[strategy]
name = "ema_cross"
[strategy.params]
fast = 5
slow = 20
bar_spec = "100t"
quantity = "2"
[replay]
progress = false
[log]
level = "warning"
""")
