"""Blobs whose removal failed: remembered in memory and as marker files until they are removed.

A request that fails after naming its blob removes the blob again, and a delete removes its row, then
its blob (rhinobox.ingest.delete). When that unlink fails too, the blob would stay with no row naming
it (an orphan). Its hash is remembered here instead, and the removal retried under the same rules: by
the running server every few seconds and at stop, and, for what a crash left behind, by the next start
before it serves.

Durably, a hash is an empty file named by it in `<data dir>/pending-removals/`, created when the removal
fails and removed once it is done. Every process and server of the data directory adds and removes its
own: nothing is ever rewritten, so no lock is needed, and a start sees what any earlier run left.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Final

from rhinobox.blobs.digest import is_digest
from rhinobox.blobs.fsops import fsync_dir

__all__ = ["PENDING_REMOVALS_DIRNAME", "PendingRemovals"]

log = logging.getLogger(__name__)
PENDING_REMOVALS_DIRNAME: Final = "pending-removals"


class PendingRemovals:
    """Hashes of blobs to remove once no row names them; the methods are thread-safe and block on I/O."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._digests: set[str] = set()
        self._unwritten: set[str] = set()  # remembered, but their marker could not be created
        self._lock = threading.Lock()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> PendingRemovals:
        return cls(data_dir / PENDING_REMOVALS_DIRNAME)

    def __len__(self) -> int:
        return len(self._digests)

    def pending(self) -> list[str]:
        """The hashes to retry now, in a stable order."""
        with self._lock:
            return sorted(self._digests)

    def remember(self, digest: str) -> None:
        """Remember `digest` in memory, then durably.

        A marker that cannot be created is tried again by `write_unwritten`; the running server still
        retries the removal meanwhile, and only a crash before either leaves an orphan (reconciliation
        reports it).
        """
        with self._lock:
            self._digests.add(digest)
        self._write(digest)

    def write_unwritten(self) -> None:
        """Create the markers still missing for hashes still pending."""
        with self._lock:
            unwritten = sorted(self._unwritten & self._digests)
        for digest in unwritten:
            self._write(digest)

    def forget(self, digest: str) -> None:
        """The blob is gone, or a row names it again: nothing left to do for it (nor for its marker)."""
        with self._lock:
            self._digests.discard(digest)
            self._unwritten.discard(digest)
        try:
            os.unlink(self.directory / digest)
        except FileNotFoundError:
            pass
        except OSError as exc:  # harmless: the next start finds nothing to remove, and drops it then
            log.info("could not remove the pending-removal marker of blob %s: %s", digest, exc)

    def load(self) -> int:
        """Start-up: take the hashes an earlier run (or another server) left pending; returns how many."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return 0
        found = {name for name in names if is_digest(name)}
        with self._lock:
            self._digests |= found
        return len(found)

    def _write(self, digest: str) -> None:
        try:
            self._create_marker(digest)
        except OSError as exc:
            with self._lock:
                self._unwritten.add(digest)
            log.warning("could not record the pending removal of blob %s in %s: %s", digest, self.directory, exc)
            return
        with self._lock:
            self._unwritten.discard(digest)

    def _create_marker(self, digest: str) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(exist_ok=True)
            fsync_dir(os.fspath(self.directory.parent))
        fd = os.open(self.directory / digest, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.close(fd)
        fsync_dir(os.fspath(self.directory))  # the name is the record
