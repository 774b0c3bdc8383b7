"""A file that exists while a server runs on the data directory: found at start, the last run crashed.

Why it matters: with `RHINOBOX_FSYNC=always` a blob is renamed into place before the one grouped sync
that makes both its bytes and its name durable (one sync per group of requests, not two). A power
cut between the rename and that sync can leave a name whose bytes never reached the disk. No catalog
row points at such a blob (rows commit after the sync), so after an unclean stop the start-up hashes
every blob without a row before serving (`rhinobox.reconcile`). After a clean stop it need not: the
stop synced everything before removing the marker.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

from rhinobox.blobs.fsops import sync_filesystem

__all__ = ["RUN_MARKER_FILENAME", "RunMarker"]

RUN_MARKER_FILENAME: Final = "rhinobox.running"


class RunMarker:
    """`begin` at start (under the data dir lock); `end` after a clean stop, else `release`.

    The data directory stays open in between, so `end` reaches it even if its path went away.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / RUN_MARKER_FILENAME
        self._dirfd: int | None = None

    def begin(self) -> bool:
        """Create the marker durably; True if it was already there (the last run did not stop cleanly).

        If it was, the filesystem is synced first: a killed process leaves its writes in the page
        cache, and its blobs are about to be hashed from there and trusted.
        """
        dirfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            existed = os.access(RUN_MARKER_FILENAME, os.F_OK, dir_fd=dirfd)
            if existed:
                sync_filesystem(dirfd)
            fd = os.open(RUN_MARKER_FILENAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644, dir_fd=dirfd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(dirfd)  # the name itself, before any blob of this run is renamed in
        except BaseException:
            os.close(dirfd)
            raise
        self._dirfd = dirfd
        return existed

    def end(self) -> None:
        """Sync the filesystem (every blob's bytes and name), then remove the marker durably."""
        if self._dirfd is None:
            return
        try:
            sync_filesystem(self._dirfd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(RUN_MARKER_FILENAME, dir_fd=self._dirfd)
            os.fsync(self._dirfd)
        finally:
            self.release()

    def release(self) -> None:
        """Leave the marker in place (the next start checks the store) and let go of the directory."""
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None
