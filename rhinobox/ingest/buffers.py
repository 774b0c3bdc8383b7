"""Pooled, fixed-size byte arenas: small files are packed back to back into one, then handed to a worker.

Arenas are allocated once and reused across files and requests; the pool's size bounds the memory
that buffered uploads can hold, and a request that finds it empty waits (backpressure on its socket).
"""

from __future__ import annotations

import asyncio
from typing import Final

from rhinobox.errors import Overloaded

__all__ = ["ARENA_BYTES", "Arena", "ArenaPool"]

ARENA_BYTES: Final = 512 * 1024
# A request waits this long for a free arena (other uploads finishing) before it is refused with 503.
ARENA_WAIT_SECONDS: Final = 30.0


class Arena:
    """A reusable buffer with a fill mark; files are (offset, length) slices of it."""

    __slots__ = ("buffer", "used", "view")

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)
        self.used = 0

    @property
    def free(self) -> int:
        return len(self.buffer) - self.used

    def append(self, data: bytes | memoryview) -> None:
        end = self.used + len(data)
        self.view[self.used : end] = data
        self.used = end


class ArenaPool:
    """At most `limit` arenas exist; `acquire` waits when all are out."""

    def __init__(self, limit: int, arena_bytes: int = ARENA_BYTES) -> None:
        self._arena_bytes = arena_bytes
        self._free: list[Arena] = []
        self._created = 0
        self._limit = limit
        self._available = asyncio.Semaphore(limit)
        self._out = 0

    @property
    def arena_bytes(self) -> int:
        return self._arena_bytes

    async def acquire(self, timeout: float = ARENA_WAIT_SECONDS) -> Arena:
        if self._available.locked():  # only pay for a timeout when there is something to wait for
            try:
                await asyncio.wait_for(self._available.acquire(), timeout)
            except TimeoutError:
                raise Overloaded("all upload buffers are busy; retry later") from None
        else:
            await self._available.acquire()
        if self._free:
            arena = self._free.pop()
        else:
            arena = Arena(self._arena_bytes)
            self._created += 1
        arena.used = 0
        self._out += 1
        return arena

    def release(self, arena: Arena) -> None:
        """Give an arena back; call on the event loop thread."""
        self._free.append(arena)
        self._out -= 1
        self._available.release()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def available(self) -> int:
        """Arenas that a request could take right now."""
        return self._limit - self._out

    @property
    def created(self) -> int:
        return self._created
