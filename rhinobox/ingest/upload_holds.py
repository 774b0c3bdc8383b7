"""One request at a time per resumable upload, in this process and across processes.

A client whose connection died silently resumes with a new request while the server may still be
waiting on the old one. As tusd does, and as the IETF draft asks, the new request ends the old one:
if the old one is waiting for bytes it is cancelled, if it is writing a block it stops after it, and
the new one goes on once the old one has released the upload (so bytes of two requests are never
interleaved). Across processes an advisory lock on the partial file says who holds it; a holder in
another process cannot be interrupted from here, so the new request gets 423.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from typing import Final

from rhinobox.errors import UploadLocked, storage_failure

__all__ = ["TAKEOVER_SECONDS", "UploadHold", "UploadHolds"]

# How long a new request waits for the one it interrupted to let go (one block write, at most).
TAKEOVER_SECONDS: Final = 10.0


class UploadHold:
    """The request holding one upload; `reading` says whether it is waiting for the client's bytes."""

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.reading = False
        self.interrupted = False
        self.released = asyncio.Event()

    def interrupt(self) -> None:
        """End this request: at once if it waits for bytes, after its current block otherwise."""
        self.interrupted = True
        if self.reading and self.task is not None:
            self.task.cancel()

    @contextlib.asynccontextmanager
    async def reading_body(self) -> AsyncIterator[None]:
        """Mark a wait for the client's next bytes (where an interrupt may cancel the request)."""
        self.reading = True
        try:
            yield
        finally:
            self.reading = False


class UploadHolds:
    """Who holds which upload in this process."""

    def __init__(self) -> None:
        self._holds: dict[str, UploadHold] = {}

    def held(self, upload_id: str) -> bool:
        return upload_id in self._holds

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str, lock_path: str) -> AsyncIterator[UploadHold]:
        """Hold `upload_id` for the current task, interrupting a request of this process that holds it."""
        previous = self._holds.get(upload_id)
        if previous is not None:
            previous.interrupt()
            try:
                await asyncio.wait_for(previous.released.wait(), TAKEOVER_SECONDS)
            except TimeoutError:
                raise UploadLocked() from None
            if upload_id in self._holds:  # a third request was quicker
                raise UploadLocked()
        fd = _lock_file(lock_path)
        hold = UploadHold(asyncio.current_task())
        self._holds[upload_id] = hold
        try:
            yield hold
        finally:
            del self._holds[upload_id]
            if fd is not None:
                os.close(fd)  # drops the advisory lock
            hold.released.set()


def _lock_file(path: str) -> int | None:
    """An exclusive advisory lock on `path` (None if the file is gone); UploadLocked if another process has it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_failure(exc, "open the partial upload") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UploadLocked("another server process is appending to this upload") from None
    return fd
