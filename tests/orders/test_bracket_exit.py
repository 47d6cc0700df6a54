"""D1 end to end: with ATR brackets on fixed-size entries, the strategy's own exits and reversals
must end the old bracket, so the position never exceeds the strategy's quantity (before the fix
stale legs filled later and the replay reached positions of -3 and +3)."""

from __future__ import annotations

import csv
from pathlib import Path

from himari.daemon.cli import main


def test_bracketed_replay_never_holds_more_than_the_strategy_quantity(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("""
[feed.synthetic]
n_ticks = 200000
seed = 11
[strategy]
name = "ema_cross"  # it trades and reverses often; the default ensemble needs a week of data
[strategy.params]
quantity = "1"
[risk]
bracket_fixed_size = true
[replay]
progress = false
[log]
level = "warning"
""")
    out = tmp_path / "out"
    assert main(["replay", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    position, peak, fills = 0, 0, 0
    with (out / "fills.csv").open() as fh:
        for row in csv.DictReader(fh):
            q = int(row["quantity"])
            position += q if row["side"] == "BUY" else -q
            peak = max(peak, abs(position))
            fills += 1
    assert fills > 50  # brackets and exits really happened
    assert peak <= 1 and position == 0
