"""Report files appear whole or not at all, and an earlier run's files never sit beside a new
report as if they belonged to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from himari.daemon.cli import main
from himari.daemon.report.writers import atomic_write, atomic_writer, set_aside_previous


@pytest.fixture(autouse=True)
def _restore_logging():
    """`main()` in-process binds structlog to this test's captured stderr; undo it after."""
    yield
    structlog.reset_defaults()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    atomic_write(path, b"old\n")
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    atomic_write(path, b"new\n")
    assert path.read_bytes() == b"new\n"


def test_only_our_artifacts_are_set_aside(tmp_path: Path) -> None:
    for name in ("report.json", "fills.csv", "decisions.jsonl", "journal.jsonl", "notes.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / ".fills.csv.tmp-123").write_text("torn")  # a write a crash interrupted
    (tmp_path / ".mine.tmp-1").write_text("user's")
    moved = set_aside_previous(tmp_path, keep=("journal.jsonl",))
    assert sorted(moved) == ["decisions.jsonl", "fills.csv", "report.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mine.tmp-1", "journal.jsonl",
                                                          "notes.txt", "previous"]
    assert (tmp_path / "previous" / "fills.csv").read_text() == "fills.csv"
    (tmp_path / "report.json").write_text("second")
    set_aside_previous(tmp_path)  # the next run: previous/ holds the latest earlier run
    assert (tmp_path / "previous" / "report.json").read_text() == "second"
    assert (tmp_path / "previous" / "journal.jsonl").read_text() == "journal.jsonl"


def test_a_new_replay_never_leaves_an_old_decision_log_beside_its_report(capsys,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "o"
    base = ["replay", "--out", str(out), "--quiet", "--set", "feed.synthetic.n_ticks=20000",
            "--set", 'strategy.name="ema_cross"', "--set", "strategy.params.bar_spec=\"20t\"",
            "--set", "log.level=\"warning\""]
    assert main(base) == 0
    assert (out / "decisions.jsonl").exists()
    assert main([*base, "--set", "report.decision_log=false"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["equity.csv", "fills.csv", "journal.jsonl",
                                                     "previous", "report.json", "tearsheet.html"]
    report = json.loads((out / "report.json").read_text())
    assert "decisions" not in report["files"]
    assert (out / "previous" / "decisions.jsonl").exists()
