"""Per-hash arbitration between processes on one data directory: `HashPins` in fcntl byte-range locks.

The same three kinds of lock as the PostgreSQL arbiter (rhinobox.catalog.postgres_locks), each one
byte of one lock file, at an offset derived from the digest:
- upload pins: shared (read) locks, held from hashing until the upload is recorded;
- deletes (`exclusive`): a write lock on the same byte, so a delete never overlaps an upload;
- commit guards (`committing`): write locks on a second byte per digest, so when two processes receive
  the same new content at once exactly one sends it and answers `stored`.

Locks are tried without waiting (`F_SETLK`, one system call of about a microsecond, on the event loop)
and retried with backoff, never queued in the kernel, which would block the loop. POSIX locks belong
to the process: the kernel drops every one a process holds when it dies, even by SIGKILL, and a
process never conflicts with itself, so a `HashPins` arbitrates first inside the process, exactly as
the PostgreSQL arbiter does for its one session. Works wherever POSIX locks do (local filesystems, NFSv4).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rhinobox.ingest.shared_pins import SharedPins

__all__ = ["HASH_LOCKS_FILENAME", "FileHashLocks", "lock_offset"]

HASH_LOCKS_FILENAME: Final = "rhinobox.hashlocks"  # in the data directory; its content stays empty
# 60 bits of the digest pick a byte pair (a collision between two digests only costs a short wait);
# the offset stays below 2^62, inside a signed 64-bit off_t.
KEY_HEX_CHARS: Final = 15
PIN_SPACE: Final = 0
COMMIT_SPACE: Final = 1
RETRY_FIRST_S: Final = 0.001
RETRY_MAX_S: Final = 0.05
_BLOCKED: Final = frozenset({errno.EACCES, errno.EAGAIN})


def lock_offset(space: int, digest: str) -> int:
    """The byte of the lock file that stands for `digest` in `space` (pins or commit guards)."""
    return (int(digest[:KEY_HEX_CHARS], 16) << 1) | space


@dataclass(slots=True, eq=False)
class _SharedHold:
    """One read lock held for however many local uploads pin the digest."""

    ready: asyncio.Future[None]
    count: int = 0


class FileHashLocks(SharedPins):
    """The `HashPins` interface, arbitrated across every process that opens the same lock file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        super().__init__()
        self._shared: dict[str, _SharedHold] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.retries = 0  # tries refused because another process held the byte

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> FileHashLocks:
        return cls(data_dir / HASH_LOCKS_FILENAME)

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._fd is not None:
            os.close(self._fd)  # the kernel drops every lock this process held on the file
            self._fd = None

    # -- upload pins ------------------------------------------------------------------------

    async def _hold_shared(self, digest: str) -> None:
        hold = self._shared.get(digest)
        if hold is None:
            hold = _SharedHold(asyncio.get_running_loop().create_future())
            try:
                granted = self._try(fcntl.LOCK_SH, lock_offset(PIN_SPACE, digest))
            except BaseException:
                hold.ready.cancel()
                raise
            self._shared[digest] = hold
            if granted:
                hold.ready.set_result(None)  # the common case: no task, no wait
            else:
                self._spawn(self._acquire_shared(digest, hold))
        hold.count += 1
        if hold.ready.done() and not hold.ready.cancelled() and hold.ready.exception() is None:
            return
        try:
            await asyncio.shield(hold.ready)
        except BaseException:
            self._drop_shared(digest)
            raise

    async def _acquire_shared(self, digest: str, hold: _SharedHold) -> None:
        """Retry the read lock (a delete holds the byte) until granted or nobody wants it any more."""
        offset = lock_offset(PIN_SPACE, digest)
        delay = RETRY_FIRST_S
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            if hold.count == 0:
                hold.ready.cancel()
                return
            try:
                granted = self._try(fcntl.LOCK_SH, offset)
            except OSError as exc:
                if not hold.ready.done():
                    hold.ready.set_exception(exc)
                return
            if granted:
                hold.ready.set_result(None)
                return

    def _drop_shared(self, digest: str) -> None:
        hold = self._shared.get(digest)
        if hold is None:
            return
        hold.count -= 1
        if hold.count > 0:
            return
        del self._shared[digest]
        ready = hold.ready
        if ready.done() and not ready.cancelled() and ready.exception() is None:
            self._unlock(lock_offset(PIN_SPACE, digest))

    # -- deletes and commits -------------------------------------------------------------------

    @asynccontextmanager
    async def exclusive(self, digest: str) -> AsyncIterator[None]:
        """Hold `digest` alone in every process: no upload holds a pin on it until the block exits."""
        offset = lock_offset(PIN_SPACE, digest)
        delay = RETRY_FIRST_S
        while True:
            # Hold the local side only for the try itself, never while waiting for other processes.
            async with self._local.exclusive(digest):
                if self._try(fcntl.LOCK_EX, offset):
                    try:
                        yield
                    finally:
                        self._unlock(offset)
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    @asynccontextmanager
    async def committing(self, digests: Iterable[str]) -> AsyncIterator[None]:
        """Hold the commit guard of each digest (in every process) while their blobs are committed."""
        wanted = sorted(set(digests))
        if not wanted:
            yield
            return
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._local.committing(wanted))
            # Sorted order in every process, as locally: no cycle between two holders.
            for digest in wanted:
                offset = lock_offset(COMMIT_SPACE, digest)
                await self._wait_exclusive(offset)
                stack.callback(self._unlock, offset)
            yield

    async def _wait_exclusive(self, offset: int) -> None:
        delay = RETRY_FIRST_S
        while not self._try(fcntl.LOCK_EX, offset):
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    # -- the lock file ---------------------------------------------------------------------------

    def _try(self, kind: int, offset: int) -> bool:
        """One non-blocking lock call; False if another process holds a conflicting lock."""
        try:
            fcntl.lockf(self._file(), kind | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
        except OSError as exc:
            if exc.errno in _BLOCKED:
                self.retries += 1
                return False
            raise
        return True

    def _unlock(self, offset: int) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset, os.SEEK_SET)

    def _file(self) -> int:
        if self._fd is None:
            raise OSError(errno.EBADF, f"the hash lock file {self.path} is not open")
        return self._fd

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
