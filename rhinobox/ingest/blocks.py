"""`BlockSpooler`: one large upload streamed to its file in big blocks on worker threads.

Received chunks are gathered (not copied) into blocks of WRITE_BLOCK bytes; each block is hashed and
written with one `writev` on a worker while the next one is read off the socket. At most one block
is in flight, and it is never abandoned: `abort` waits for it before closing the file, so a thread
can never write into a file descriptor that has been closed (and maybe reused).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from functools import partial
from typing import Final, Generic, Protocol, TypeVar

from rhinobox.errors import RhinoBoxError
from rhinobox.ingest.pool import WorkerPool

__all__ = ["MAX_BLOCK_PIECES", "WRITE_BLOCK", "BlockSpooler", "BlockWriter"]

WRITE_BLOCK: Final = 4 * 1024 * 1024  # large files are hashed and written in blocks this big
MAX_BLOCK_PIECES: Final = 512  # received chunks per block: one writev takes at most IOV_MAX (1024)


class BlockWriter(Protocol):
    """Where blocks go: a new spool file (`SpoolWriter`) or a resumable upload's partial file."""

    def write_pieces(self, pieces: Sequence[bytes | memoryview]) -> None: ...

    def abort(self) -> None: ...


W = TypeVar("W", bound=BlockWriter)


class BlockSpooler(Generic[W]):
    """Feeds one writer; errors of a block write surface on the next call."""

    def __init__(self, pool: WorkerPool, writer: W) -> None:
        self.writer = writer
        self._pool = pool
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._write: asyncio.Future[None] | None = None

    @property
    def outstanding(self) -> asyncio.Future[None] | None:
        """The block write still running on a worker, if any."""
        return self._write if self._write is not None and not self._write.done() else None

    async def append(self, data: bytes | memoryview) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= WRITE_BLOCK or len(self._pending) >= MAX_BLOCK_PIECES:
            await self._flush()

    async def drain(self) -> None:
        """Write what is left and wait for it (then finish the writer)."""
        if self._pending:
            await self._flush()
        await self._wait()

    async def abort(self) -> None:
        """Stop: wait for the block in flight (ignoring its error), then abort the writer."""
        self._pending, self._pending_bytes = [], 0
        with contextlib.suppress(RhinoBoxError, OSError):
            await self._wait()
        self.writer.abort()

    async def _flush(self) -> None:
        block, self._pending, self._pending_bytes = self._pending, [], 0
        await self._wait()
        self._write = self._pool.submit_io(partial(self.writer.write_pieces, block))

    async def _wait(self) -> None:
        write = self._write
        if write is None:
            return
        try:
            await asyncio.shield(write)
        finally:
            if write.done():
                self._write = None
