"""Per-hash arbitration between uploads and deletes, on the event loop.

Uploads pin the hashes they are committing (shared, never blocking each other); a delete waits until
a hash is unpinned, then holds it alone for the short delete itself. So an upload that answered
`stored` or `duplicate` can never be left pointing at a blob that a delete removed: either the delete
ran first and the upload stores the blob again, or the upload's record exists when the delete runs.
Commits of the same new content are serialized (`committing`), so exactly one of them sends it and
answers `stored`, even on a store without an atomic create (S3). `HashArbiter` is what ingest needs;
a backend shared by several nodes provides its own (rhinobox.catalog.postgres_locks).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

__all__ = ["HashArbiter", "HashPins"]


class HashArbiter(Protocol):
    """Per-hash arbitration between uploads, commits and deletes (`HashPins` within one process)."""

    async def pin(self, digest: str) -> None: ...

    def unpin(self, digest: str) -> None: ...

    def unpin_all(self, digests: Iterable[str]) -> None: ...

    def pinned(self, digest: str) -> int: ...

    def exclusive(self, digest: str) -> AbstractAsyncContextManager[None]: ...

    def committing(self, digests: Iterable[str]) -> AbstractAsyncContextManager[None]: ...


class HashPins:
    """Shared pins for uploads, exclusive holds for deletes, keyed by digest."""

    def __init__(self) -> None:
        self._pins: dict[str, int] = defaultdict(int)
        self._exclusive: dict[str, asyncio.Event] = {}
        self._drained: dict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._commits: dict[str, asyncio.Event] = {}

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
                try:
                    await waiter
                finally:
                    waiters = self._drained.get(digest)
                    if waiters is not None and waiter in waiters:
                        waiters.remove(waiter)
                        if not waiters:
                            del self._drained[digest]
                continue
            break
        done = asyncio.Event()
        self._exclusive[digest] = done
        try:
            yield
        finally:
            del self._exclusive[digest]
            done.set()

    @asynccontextmanager
    async def committing(self, digests: Iterable[str]) -> AsyncIterator[None]:
        """Hold the commit guard of each digest: one commit at a time may send a given content."""
        held: list[str] = []
        try:
            for digest in sorted(set(digests)):  # one order for everyone: no cycle between holders
                while (busy := self._commits.get(digest)) is not None:
                    await busy.wait()
                self._commits[digest] = asyncio.Event()
                held.append(digest)
            yield
        finally:
            for digest in held:
                self._commits.pop(digest).set()
