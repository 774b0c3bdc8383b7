"""A file that exists while a server runs on the data directory: found at start, the last run crashed.

Why it matters: with `RHINOBOX_FSYNC=always` a blob is renamed into place before the one grouped sync
that makes both its bytes and its name durable (one sync per group of requests, not two). A power
cut between the rename and that sync can leave a name whose bytes never reached the disk. No catalog
row points at such a blob (rows commit after the sync), so after an unclean stop the start-up hashes
every blob without a row before serving (`rhinobox.reconcile`). After a clean stop it need not: the
stop synced everything before removing the marker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from rhinobox.blobs.fsops import sync_filesystem

__all__ = ["RUN_MARKER_FILENAME", "RunMarker"]

RUN_MARKER_FILENAME: Final = "rhinobox.running"


class RunMarker:
    """`begin` at start (under the data dir lock), `end` after a clean stop; both durable."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / RUN_MARKER_FILENAME

    def begin(self) -> bool:
        """Create the marker durably; True if it was already there (the last run did not stop cleanly)."""
        existed = self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._on_directory(os.fsync)  # the name itself, before any blob of this run is renamed in
        return existed

    def end(self) -> None:
        """Sync the filesystem (every blob's bytes and name), then remove the marker durably."""
        self._on_directory(sync_filesystem)
        self.path.unlink(missing_ok=True)
        self._on_directory(os.fsync)

    def _on_directory(self, call: Callable[[int], None]) -> None:
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            call(fd)
        finally:
            os.close(fd)
