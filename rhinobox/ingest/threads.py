"""`HandedWork`: what one request gave to worker threads, so that it is never abandoned mid-flight.

A worker may still be reading an arena or writing a spool file when the request fails or is cancelled;
cleanup must wait for it before releasing the arena or removing the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["HandedWork"]


class HandedWork:
    """Futures of thread tasks one request started; `wait` collects them, `settle` outlives a cancel."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[None]] = []

    def add(self, future: asyncio.Future[None]) -> None:
        self._futures.append(future)

    async def wait(self) -> None:
        """Wait for every task handed over so far; re-raise the first unexpected error."""
        futures = self._futures
        if not futures:
            return
        await asyncio.wait(futures)
        self._futures = []  # only now: if this wait is cancelled, `settle` must still wait for them
        for future in futures:
            if not future.cancelled() and (error := future.exception()) is not None:
                raise error

    async def settle(self, also: Iterable[asyncio.Future[None]] = ()) -> None:
        """Wait (errors ignored) for every task still running, and for `also`; for cleanup."""
        outstanding = [f for f in self._futures if not f.done()]
        outstanding += also
        self._futures = []
        if outstanding:
            await asyncio.wait(outstanding)
