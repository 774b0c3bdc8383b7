"""Per-hash arbitration between uploads and deletes, on the event loop.

Uploads pin the hashes they are committing (shared, never blocking each other); a delete waits until
a hash is unpinned, then holds it alone for the short delete itself. So an upload that answered
`stored` or `duplicate` can never be left pointing at a blob that a delete removed: either the delete
ran first and the upload stores the blob again, or the upload's record exists when the delete runs.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

__all__ = ["HashPins"]


class HashPins:
    """Shared pins for uploads, exclusive holds for deletes, keyed by digest."""

    def __init__(self) -> None:
        self._pins: dict[str, int] = defaultdict(int)
        self._exclusive: dict[str, asyncio.Event] = {}
        self._drained: dict[str, list[asyncio.Future[None]]] = defaultdict(list)

    async def pin(self, digest: str) -> None:
        """Take a shared pin; waits only while a delete of this digest is running."""
        while (held := self._exclusive.get(digest)) is not None:
            await held.wait()
        self._pins[digest] += 1

    def unpin(self, digest: str) -> None:
        left = self._pins[digest] - 1
        if left > 0:
            self._pins[digest] = left
            return
        del self._pins[digest]
        for waiter in self._drained.pop(digest, ()):
            if not waiter.done():
                waiter.set_result(None)

    def unpin_all(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self.unpin(digest)

    def pinned(self, digest: str) -> int:
        return self._pins.get(digest, 0)

    @asynccontextmanager
    async def exclusive(self, digest: str) -> AsyncIterator[None]:
        """Hold `digest` alone: no upload holds a pin on it until the block exits."""
        loop = asyncio.get_running_loop()
        while True:
            if (held := self._exclusive.get(digest)) is not None:
                await held.wait()
                continue
            if self._pins.get(digest):
                waiter: asyncio.Future[None] = loop.create_future()
                self._drained[digest].append(waiter)
                await waiter
                continue
            break
        done = asyncio.Event()
        self._exclusive[digest] = done
        try:
            yield
        finally:
            del self._exclusive[digest]
            done.set()
