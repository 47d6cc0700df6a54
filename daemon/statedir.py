"""The daemon's state directory: one owner at a time, and where its journal lives.

`StateDir(path)` creates the directory, then takes an exclusive `fcntl.flock` on `DIR/lock` and
writes our PID into it. The kernel drops a flock when its holder dies (SIGKILL included), so a
crashed daemon never leaves the directory locked, and a PID left in the file is only a hint: the
lock is the truth. A second daemon on the same directory gets `StateDirInUse` naming the holder's
PID; the command line turns it (like every `StartupError`) into exit 2, which systemd does not
restart on, because a restart cannot fix it.

Layout: `lock`, `journal.jsonl` (the write-ahead journal, appended across runs and never deleted;
see `daemon/orders/journal.py`), `journal.cut-<n>` (damaged tails moved aside), `session` (the
last id session, see `daemon/ids.py`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "lock"
JOURNAL_NAME = "journal.jsonl"


class StartupError(Exception):
    """A problem a restart cannot fix (a path that is unusable, a directory in use): exit 2."""


class StateDirInUse(StartupError):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.path, self.pid = path, pid
        who = f"PID {pid}" if pid is not None else "another process (PID unknown)"
        super().__init__(f"state directory {path} is in use by {who}")


def usable_dir(path: Path, what: str) -> Path:
    """Create `path` if needed and check we can write in it; StartupError naming it if not."""
    try:
        if path.exists() and not path.is_dir():
            raise StartupError(f"{what} {path} is not usable: a file is in the way")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".himari-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except StartupError:
        raise
    except OSError as exc:
        raise StartupError(f"{what} {path} is not usable: {exc.strerror or exc}") from None
    return path


class StateDir:
    def __init__(self, path: str | Path) -> None:
        self.path = usable_dir(Path(path), "state directory")
        self._fd: int | None = None
        self._lock()

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL_NAME

    def _lock(self) -> None:
        lock = self.path / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StartupError(f"state directory {self.path} is not usable: cannot open {lock}: "
                               f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateDirInUse(self.path, pid) from None
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"state directory {self.path}: cannot lock {lock}: "
                               f"{exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (the lock file stays: removing it would race a newcomer's lock)."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing drops the flock
                self._fd = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "StateDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
