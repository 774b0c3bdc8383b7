"""One server per data directory: an exclusive lock held for the process's lifetime.

Start-up removes spool files left by a crash; without this lock a second server started on the same
directory (even one that then fails to bind its port) would delete the first one's live uploads.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Final

__all__ = ["LOCK_FILENAME", "DataDirLock", "DataDirLocked"]

LOCK_FILENAME: Final = "rhinobox.lock"
ORPHAN_WAIT_S: Final = 10.0  # how long a start waits for the processes of a dead supervisor to be gone
ORPHAN_POLL_S: Final = 0.05


class DataDirLocked(RuntimeError):
    """Another process holds the data directory."""


class DataDirLock:
    """`acquire` takes the lock without waiting (or raises `DataDirLocked`); `release` drops it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILENAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + ORPHAN_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # The serving processes of a group hold the lock too; when their supervisor (the pid in
                # the file) died, the kernel is killing them: wait for that, never for a live server.
                if _holder_alive(fd) or time.monotonic() > deadline:
                    os.close(fd)
                    raise DataDirLocked(
                        f"another RhinoBox process is using the data directory {self.path.parent}"
                    ) from None
                time.sleep(ORPHAN_POLL_S)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

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
    """Whether the process whose pid the lock file holds still runs (unreadable: assume it does)."""
    try:
        pid = int(os.pread(fd, 32, 0).split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, OSError) as exc:
        return isinstance(exc, PermissionError)  # exists, but another user's
    return True
