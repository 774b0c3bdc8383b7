"""Who may use a data directory: one server alone (exclusive lock), or several that share it (shared lock).

Start-up removes spool files left by a crash; without this lock a second server started on the same
directory (even one that then fails to bind its port) would delete the first one's live uploads. A
server alone on the directory (SQLite catalog, S3 blobs, `rhinobox verify --repair`) takes the lock
exclusively; servers with a PostgreSQL catalog and local blobs take it shared, so several of them may
run on one directory (each keeps its own spool files apart: rhinobox.instances), and neither kind
starts while the other runs.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Final

__all__ = ["LOCK_FILENAME", "ORPHAN_POLL_S", "ORPHAN_WAIT_S", "DataDirLock", "DataDirLocked"]

LOCK_FILENAME: Final = "rhinobox.lock"
ORPHAN_WAIT_S: Final = 10.0  # how long a start waits for the processes of a dead supervisor to be gone
ORPHAN_POLL_S: Final = 0.05
SHARED_MARK: Final = b"shared\n"  # what shared holders write in place of a pid: they are alive while they hold it
_ALONE_HINT: Final = (
    "several servers may share a data directory only with a PostgreSQL catalog and local blobs (docs/scale-out.md)"
)


class DataDirLocked(RuntimeError):
    """Another process holds the data directory."""


class DataDirLock:
    """`acquire` takes the lock without waiting (or raises `DataDirLocked`); `release` drops it.

    `shared`: several servers sharing the directory hold it together; exclusive holders wait for none.
    """

    def __init__(self, data_dir: Path, *, shared: bool = False) -> None:
        self.path = data_dir / LOCK_FILENAME
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + ORPHAN_WAIT_S
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # The serving processes of a group hold the lock too; when their supervisor (the pid in
                # the file) died, the kernel is killing them: wait for that, never for a live server.
                if _holder_alive(fd) or time.monotonic() > deadline:
                    os.close(fd)
                    raise DataDirLocked(self._refusal()) from None
                time.sleep(ORPHAN_POLL_S)
        if self.shared:
            os.pwrite(fd, SHARED_MARK, 0)  # no truncation: another shared holder may be reading it
        else:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _refusal(self) -> str:
        """One line saying who holds the directory and what would be allowed."""
        where = f"another RhinoBox process is using the data directory {self.path.parent}"
        if self.shared:
            return f"{where} alone (a SQLite catalog, S3 blobs, or `rhinobox verify --repair`)"
        return f"{where}; {_ALONE_HINT}"

    @property
    def fileno(self) -> int | None:
        """The locked descriptor: serving processes of a group inherit it, so the directory stays locked
        until the last of them has exited, not only the supervisor."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _holder_alive(fd: int) -> bool:
    """Whether the process whose pid the lock file holds still runs (unreadable: assume it does).

    Shared holders write no pid: a server that shares the directory is alive while it holds the lock.
    """
    try:
        head = os.pread(fd, 32, 0)
        if head.startswith(SHARED_MARK):
            return True
        pid = int(head.split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, OSError) as exc:
        return isinstance(exc, PermissionError)  # exists, but another user's
    return True
