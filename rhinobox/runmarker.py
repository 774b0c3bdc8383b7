"""A file that exists while a server runs on the data directory: found at start, the last run crashed.

Why it matters: with `RHINOBOX_FSYNC=always` a blob is renamed into place before the one grouped sync
that makes both its bytes and its name durable (one sync per group of requests, not two). A power
cut between the rename and that sync can leave a name whose bytes never reached the disk. So after
an unclean stop the start-up hashes, before serving, every blob without a catalog row and every blob
named (or, with a SQLite catalog sharing the sync, first catalogued) since the marker's modification
time (`rhinobox.reconcile`): after each sync the marker's
mtime is moved up to the time that sync began (at most once a second), so it says "every blob named
before this is durable". After a clean stop nothing needs hashing: the stop synced everything
before removing the marker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Final

from rhinobox.blobs.fsops import sync_filesystem

__all__ = ["RUN_MARKER_FILENAME", "RunMarker"]

log = logging.getLogger(__name__)
RUN_MARKER_FILENAME: Final = "rhinobox.running"
ADVANCE_SECONDS: Final = 1.0
CLOCK_SLACK_SECONDS: Final = 2.0


class RunMarker:
    """`begin` at start (under the data dir lock); `end` after a clean stop, else `release`.

    It lives in the data directory, or in the server's own directory where several servers share the
    data directory (rhinobox.instances: each has its own marker, and a start adopts the dead ones').

    The data directory stays open in between, so `end` reaches it even if its path went away.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / RUN_MARKER_FILENAME
        self._dirfd: int | None = None
        self.durable_before: float | None = None  # from the marker found at start: the crashed run's last word
        self._synced_at = 0.0
        self._advanced = 0.0

    def begin(self) -> None:
        """Create the marker durably. If it was already there, the last run did not stop cleanly:
        `check_since` says from when to check, and the filesystem is synced first (a killed process
        leaves its writes in the page cache, and its blobs are about to be hashed and trusted).
        """
        dirfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            existed = os.access(RUN_MARKER_FILENAME, os.F_OK, dir_fd=dirfd)
            if existed:
                # Its time stays until this start's check is done (`checked`): a start that fails
                # before then must leave the crashed run's bound for the next one.
                self.durable_before = os.stat(RUN_MARKER_FILENAME, dir_fd=dirfd).st_mtime
                self._synced_at = time.time()
                sync_filesystem(dirfd)
            else:
                self.durable_before = None
            fd = os.open(RUN_MARKER_FILENAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644, dir_fd=dirfd)
            try:
                os.fsync(fd)  # a new marker's time is now: nothing of this run is named yet
            finally:
                os.close(fd)
            os.fsync(dirfd)  # the name itself, before any blob of this run is renamed in
        except BaseException:
            os.close(dirfd)
            raise
        self._dirfd = dirfd

    def adopt(self, durable_before: float) -> None:
        """Also check what a dead server that shared the data directory may not have synced (`durable_before`:
        its marker's time); the filesystem is synced first, as `begin` does after this marker's own crash."""
        if self._dirfd is None:
            raise RuntimeError("adopt() before begin()")
        if self.durable_before is None or durable_before < self.durable_before:
            self.durable_before = durable_before
        self._synced_at = time.time()
        sync_filesystem(self._dirfd)

    @property
    def check_since(self) -> float | None:
        """After an unclean stop, the wall time from which blobs must be hashed (None after a clean one).

        A little before the crashed run's last word: the kernel stamps a rename with a coarse clock.
        """
        return None if self.durable_before is None else self.durable_before - CLOCK_SLACK_SECONDS

    def checked(self) -> None:
        """The start-up check is done: everything named before this start's first sync is durable and intact."""
        if self.durable_before is not None:
            self._set_time(self._synced_at)

    def advance(self, synced_before: float) -> None:
        """Record that every blob named before `synced_before` is durable (made durable by the next sync).

        Called after each successful sync, on whichever thread ran it (the blob store's sync thread,
        or the catalog writer's when they share the sync); writes at most once a second.
        """
        if synced_before - self._advanced >= ADVANCE_SECONDS:
            self._set_time(synced_before)

    def _set_time(self, when: float) -> None:
        if self._dirfd is None:
            return
        try:
            os.utime(RUN_MARKER_FILENAME, (when, when), dir_fd=self._dirfd)
        except OSError as exc:  # an older time only widens the next check: never worth failing a sync
            log.warning("could not update the run marker's time: %s", exc)
            return
        self._advanced = when

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
