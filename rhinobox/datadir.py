"""One server per data directory: an exclusive lock held for the process's lifetime.

Start-up removes spool files left by a crash; without this lock a second server started on the same
directory (even one that then fails to bind its port) would delete the first one's live uploads.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

__all__ = ["LOCK_FILENAME", "DataDirLock", "DataDirLocked"]

LOCK_FILENAME: Final = "rhinobox.lock"


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
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(f"another RhinoBox process is using the data directory {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
