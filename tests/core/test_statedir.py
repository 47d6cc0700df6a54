"""The state directory: one owner (flock), the holder named, unusable paths refused; and the id
sessions that keep client order ids unique across runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from himari.daemon.ids import IdSource, from_base36, to_base36
from himari.daemon.statedir import StartupError, StateDir, StateDirInUse


def test_a_second_owner_is_refused_naming_the_holders_pid(tmp_path: Path) -> None:
    d = tmp_path / "state" / "deep"  # created with its parents
    with StateDir(d) as first:
        assert (d / "lock").read_text().strip() == str(os.getpid())
        assert first.journal_path == d / "journal.jsonl"
        with pytest.raises(StateDirInUse, match=f"state directory {d} is in use by PID {os.getpid()}"):
            StateDir(d)  # flock is per open file: a second open in this process is refused too
    with StateDir(d) as again:  # released on exit
        assert again.locked


def test_a_lock_held_by_another_process_is_refused_and_freed_when_it_dies(tmp_path: Path) -> None:
    code = ("import sys; from himari.daemon.statedir import StateDir; s = StateDir(sys.argv[1]); "
            "print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateDirInUse) as info:
            StateDir(tmp_path)
        assert info.value.pid == holder.pid
        holder.kill()  # SIGKILL: the kernel drops the flock with the process
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    StateDir(tmp_path).release()


def test_an_unusable_state_directory_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StartupError, match=f"state directory {blocker} is not usable: a file"):
        StateDir(blocker)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(StartupError, match=f"state directory {ro} is not usable"):
                StateDir(ro)
        finally:
            ro.chmod(0o700)


def test_base36_round_trip() -> None:
    for n in (0, 35, 36, 1_764_480_000_000):
        assert from_base36(to_base36(n)) == n
    assert (to_base36(35), to_base36(36 ** 2), len(to_base36(1_764_480_000_000))) == ("z", "100", 8)
    assert from_base36("R-") is None


def test_sessions_never_repeat_across_runs_even_when_the_clock_steps_back(tmp_path: Path) -> None:
    a = IdSource.for_state_dir(tmp_path, now_ms=1_764_480_000_000)
    b = IdSource.for_state_dir(tmp_path, now_ms=1_764_480_000_000)  # same millisecond
    c = IdSource.for_state_dir(tmp_path, now_ms=1_000)  # the wall clock stepped back
    sessions = [from_base36(s.session) for s in (a, b, c)]
    assert sessions == [1_764_480_000_000, 1_764_480_000_001, 1_764_480_000_002]
    assert a.next("C") == f"C-{a.session}-1" and a.next("C") != b.next("C")
    # a session seen in the journal (the session file lost) is also passed
    (tmp_path / "new").mkdir()
    d = IdSource.for_state_dir(tmp_path / "new", now_ms=5, seen=[c.session, "R", "T"])
    assert from_base36(d.session) == 1_764_480_000_003


def test_replays_keep_the_deterministic_session() -> None:
    ids = IdSource()
    assert [ids.next("C"), ids.next("C"), ids.next("O")] == ["C-R-1", "C-R-2", "O-R-1"]
