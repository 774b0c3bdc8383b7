"""`BlockSpooler`: one large upload streamed to its spool file in big blocks on worker threads.

Received chunks are gathered (not copied) into blocks of WRITE_BLOCK bytes; each block is hashed and
written with one `writev` on a worker while the next one is read off the socket. At most one block
is in flight, and it is never abandoned: `abort` waits for it before closing the file, so a thread
can never write into a file descriptor that has been closed (and maybe reused).
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import Final

from rhinobox.errors import RhinoBoxError
from rhinobox.ingest.pool import WorkerPool
from rhinobox.ingest.spool import SpoolWriter

__all__ = ["MAX_BLOCK_PIECES", "WRITE_BLOCK", "BlockSpooler"]

WRITE_BLOCK: Final = 4 * 1024 * 1024  # large files are hashed and written in blocks this big
MAX_BLOCK_PIECES: Final = 512  # received chunks per block: one writev takes at most IOV_MAX (1024)


class BlockSpooler:
    """Feeds one `SpoolWriter`; errors of a block write surface on the next call."""

    def __init__(self, pool: WorkerPool, writer: SpoolWriter) -> None:
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

    async def finish(self) -> str:
        """Write what is left, wait for it, close the file; returns the BLAKE3 hex digest."""
        if self._pending:
            await self._flush()
        await self._wait()
        return self.writer.finish()

    async def abort(self) -> None:
        """Stop: wait for the block in flight (ignoring its error), then close and remove the file."""
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
