"""Blobs as files under the data directory: `blobs/<2 hex>/<64 hex>`, spool files in `tmp/`.

The 256 fan-out directories are created once at open, never per file (mkdir is costly on ext4).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Final

from rhinobox.blobs.digest import is_digest
from rhinobox.blobs.durability import GroupSyncer
from rhinobox.blobs.fsops import rename_noreplace, sync_filesystem
from rhinobox.blobs.layout import BLOBS_DIRNAME, FANOUT_HEX_CHARS, SPOOL_DIRNAME, blob_name
from rhinobox.blobs.shared_sync import GROUP_DIRNAME, SharedSync
from rhinobox.errors import BlobNotFound, storage_failure

__all__ = ["LocalBlobStore"]

log = logging.getLogger(__name__)
READ_CHUNK: Final = 256 * 1024
PEER_NAME_SLACK_S: Final = 2.0  # as rhinobox.runmarker's clock slack: a rename's coarse timestamp


class LocalBlobStore:
    """A `BlobStore` on the local filesystem, with grouped syncs for durability."""

    inline_io = True
    names_may_outlive_bytes = True  # commit renames, then one grouped sync covers the bytes and the name

    def __init__(self, data_dir: Path, *, durable: bool, instance_dir: Path | None = None) -> None:
        """`instance_dir`: this server's own directory where several servers share the data directory
        (rhinobox.instances), holding its spool and group files; None: the data directory is its alone."""
        self.root = data_dir / BLOBS_DIRNAME
        home = data_dir if instance_dir is None else instance_dir
        # A serving process of a group finds its group's sync record here (rhinobox.group_state).
        self._group_dir = home / GROUP_DIRNAME
        self._root_str = os.fspath(self.root)
        self._spool_dir = home / SPOOL_DIRNAME
        self._durable = durable
        # Other servers name blobs here too, and this one's renames are all it tracks: a blob another
        # server named since shortly before this one's last sync may not be durable yet (`needs_flush`).
        self._peers = instance_dir is not None
        self._synced_before = 0.0  # wall time the last completed sync began
        self._dirfd: int | None = None
        self._syncer: GroupSyncer | None = None
        # Digests renamed in since the last sync began (`_unsynced`), renamed before the running sync
        # began (`_syncing`), or with a rename in flight (`_renaming`, a count per digest): a duplicate
        # of one of these must wait for a sync too, or it could answer before the blob it points at is
        # durable. Only a sync that begins after a rename returned clears its digest.
        self._unsynced: set[str] = set()
        self._syncing: set[str] = set()
        self._renaming: Counter[str] = Counter()
        self._lock = threading.Lock()
        # One sync at a time, whichever thread asks (the group syncer's, or the catalog writer's
        # through `sync_covering`): a write-back error is reported to one sync only, and every sync
        # after it must see `sync_failure` before it could trust a clean return.
        self._sync_lock = threading.Lock()
        # In a group: syncs are taken in turns with the other processes, and one covers them all. Then
        # `_named_at` (after the latest rename) and `_flush_wanted` (the latest flush call) say which
        # syncs, begun by any process, are late enough to count (monotonic ns).
        self._shared: SharedSync | None = None
        self._named_at = 0
        self._flush_wanted = 0
        self.sync_failure: OSError | None = None
        self.syncs = 0  # completed, whichever thread asked
        self._on_durable: Callable[[float], None] | None = None

    @property
    def spool_dir(self) -> Path:
        return self._spool_dir

    def open(self) -> None:
        """Create the directory tree (idempotent) and the sync machinery."""
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        for prefix in range(16**FANOUT_HEX_CHARS):
            (self.root / f"{prefix:0{FANOUT_HEX_CHARS}x}").mkdir(exist_ok=True)
        self._dirfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        if self._durable:
            self._shared = SharedSync.attach(self._group_dir)
            if self._shared is not None:
                self._shared.register()
        self._syncer = GroupSyncer(self.sync if self._shared is None else self._sync_for_flushes)

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.close()
            self._syncer = None
        with self._sync_lock:  # a sync on another thread (the catalog writer's) ends first
            if self._dirfd is not None:
                os.close(self._dirfd)
                self._dirfd = None
            if self._shared is not None:
                self._shared.close()
                self._shared = None

    def path_for(self, digest: str) -> Path:
        return self.root / blob_name(digest)

    def relative_name(self, digest: str) -> str:
        return blob_name(digest)

    def _path_str(self, digest: str) -> str:
        # Plain string joins: pathlib costs several microseconds per call on the per-file hot path.
        return f"{self._root_str}/{digest[:FANOUT_HEX_CHARS]}/{digest}"

    def contains(self, digest: str) -> bool:
        # access(F_OK), not exists(): a miss (every new file) raises no exception in C (0.4 vs 1.0 us)
        return os.access(self._path_str(digest), os.F_OK)

    def commit(self, spool_path: str, digest: str) -> bool:
        # In flight from before the rename: a concurrent duplicate that sees the new name must also see
        # that it is not yet durable. Unsynced from after it: a sync already running when the rename
        # landed may not cover it. A losing rename (the name was there) leaves the winner's marks alone.
        if self._durable:
            with self._lock:
                self._renaming[digest] += 1
        created = False
        named = True  # unless the rename said otherwise: a failed link-then-unlink may have named it
        try:
            created = rename_noreplace(spool_path, self._path_str(digest))
            named = created
        except BaseException:
            _unlink_quietly(spool_path)
            raise
        finally:
            if self._durable:
                with self._lock:
                    self._renaming[digest] -= 1
                    if not self._renaming[digest]:
                        del self._renaming[digest]
                    if named:
                        self._unsynced.add(digest)
                        if self._shared is not None:
                            self._named_at = time.monotonic_ns()
        if not created:
            _unlink_quietly(spool_path)
        return created

    def needs_flush(self, digest: str) -> bool:
        if not self._durable:
            return False
        with self._lock:
            if digest in self._renaming or digest in self._unsynced or digest in self._syncing:
                return True
        return self._peers and self._named_since_sync(digest)

    def _named_since_sync(self, digest: str) -> bool:
        """Whether the blob's name (its inode's change time) may be newer than this store's last sync.

        The kernel stamps a rename with a coarse clock, so a blob named up to PEER_NAME_SLACK_S before
        that sync began counts as newer too: a duplicate of it then waits for one more sync.
        """
        try:
            named = os.stat(self._path_str(digest)).st_ctime
        except FileNotFoundError:
            return False
        return named >= self._synced_before - PEER_NAME_SLACK_S

    async def flush(self) -> None:
        if self._durable and self._syncer is not None:
            if self.sync_failure is not None:
                raise _again(self.sync_failure)
            if self._shared is not None:
                self._flush_wanted = time.monotonic_ns()  # read by the round that serves this barrier, or later
            await self._syncer.barrier()

    def on_durable(self, callback: Callable[[float], None]) -> None:
        self._on_durable = callback

    def sync_covering(self, path: Path) -> Callable[[], None] | None:
        if not self._durable or self._dirfd is None:
            return None
        return self.sync if os.stat(path).st_dev == os.fstat(self._dirfd).st_dev else None

    def sync(self) -> None:
        """Make every write so far durable (blocking; from any thread, one sync at a time)."""
        self._sync(None)

    def _sync_for_flushes(self) -> None:
        """The group syncer's round: its flushes and renames all came before the latest of their stamps."""
        self._sync(self._flush_wanted)

    def _sync(self, wanted: int | None) -> None:
        with self._sync_lock:
            if self.sync_failure is not None:
                raise _again(self.sync_failure)
            dirfd = self._dirfd
            if dirfd is None:
                raise OSError(errno.EBADF, "the blob store is closed")
            with self._lock:
                self._syncing, self._unsynced = self._unsynced, set()
                named_at = self._named_at
            try:
                if self._shared is None:
                    began = time.time()  # every rename the kernel finished before this is covered by this sync
                    sync_filesystem(dirfd)
                else:
                    # Every write to cover came before `want`: a sync any process began after it will do.
                    want = time.monotonic_ns() if wanted is None else max(wanted, named_at)
                    began = self._shared.run(want, lambda: sync_filesystem(dirfd))
            except OSError as exc:
                # Once a sync has reported a write-back error, the kernel marks those pages clean and
                # a second sync says nothing: retrying would trust bytes that never reached the disk.
                # Every later flush fails instead, until a restart checks the store (runmarker.py).
                self.sync_failure = OSError(exc.errno, f"an earlier sync failed ({exc.strerror}); restart the server")
                log.error("filesystem sync failed: %s; refusing durable answers until restarted", exc)
                raise
            with self._lock:
                self._syncing = set()
            self._synced_before = began
            self.syncs += 1
            if self._on_durable is not None:
                self._on_durable(began)

    def delete(self, digest: str) -> bool:
        try:
            os.unlink(self.path_for(digest))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise storage_failure(exc, "delete the blob") from exc
        return True

    def size(self, digest: str) -> int | None:
        try:
            return os.stat(self.path_for(digest)).st_size
        except FileNotFoundError:
            return None

    def local_path(self, digest: str) -> Path | None:
        path = self.path_for(digest)
        return path if path.exists() else None

    async def read_range(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            handle = await loop.run_in_executor(None, open, self.path_for(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound() from None
        try:
            await loop.run_in_executor(None, handle.seek, start)
            left = end - start
            while left > 0:
                chunk = await loop.run_in_executor(None, handle.read, min(READ_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk
        finally:
            handle.close()

    def iter_digests(self) -> Iterator[str]:
        for fanout in os.scandir(self.root):
            if not fanout.is_dir():
                continue
            for entry in os.scandir(fanout.path):
                if is_digest(entry.name) and entry.name.startswith(fanout.name):
                    yield entry.name

    def iter_changed_since(self, when: float) -> Iterator[str]:
        # Naming a blob (a rename) sets its inode's ctime and its directory's mtime: a fan-out
        # directory unchanged since `when` holds nothing newer, and its inodes need not be read.
        for fanout in os.scandir(self.root):
            if not fanout.is_dir() or fanout.stat().st_mtime < when:
                continue
            dirfd = os.open(fanout.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for name in os.listdir(dirfd):
                    if is_digest(name) and name.startswith(fanout.name):
                        with contextlib.suppress(FileNotFoundError):
                            if os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_ctime >= when:
                                yield name
            finally:
                os.close(dirfd)

    def remove_stale_spool(self) -> int:
        removed = 0
        for entry in os.scandir(self._spool_dir):
            if entry.is_file(follow_symlinks=False):
                _unlink_quietly(Path(entry.path))
                removed += 1
        return removed


def _again(failure: OSError) -> OSError:
    """A new error each time (one shared instance would gather every raise's traceback)."""
    return OSError(failure.errno, failure.strerror)


def _unlink_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
