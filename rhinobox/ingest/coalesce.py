"""Coalescing single-file requests: under concurrent load, many one-file requests share one thread hop.

A lone single-file request is prepared inline on the event loop (the fast path: no hop at all). When
several are in flight at once, a file typed without libmagic (media headers by the signature table,
plain text and unknown bytes by the compiled filter: microseconds) is still prepared inline, up to a
bound per loop iteration, since its only other cost is one small spool write; the thread hop and
wake-ups cost more than that. Files that need libmagic are gathered for one loop iteration and
prepared together in one worker task, like an arena of a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Final

from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.pool import WorkerPool

__all__ = ["INLINE_PER_ITERATION", "SingleFileCoalescer"]

# Files typed without libmagic prepared on the loop per iteration under load: each is one small spool
# write (about 35 us for 128 KiB here) and at most tens of microseconds of typing, so this bounds the
# iteration at a millisecond or so.
INLINE_PER_ITERATION: Final = 16

PrepareFn = Callable[[Sequence[FileEntry]], None]
TypeFn = Callable[[FileEntry], bool]


class SingleFileCoalescer:
    """`prepare(entry)` runs inline when alone or cheap, else in a shared worker task with its neighbours."""

    def __init__(self, pool: WorkerPool, prepare: PrepareFn, type_cheaply: TypeFn) -> None:
        self._pool = pool
        self._prepare = prepare
        self._type_cheaply = type_cheaply
        self._active = 0
        self._pending: list[FileEntry] = []
        self._batch: asyncio.Future[None] | None = None
        self._inline_this_iteration = 0
        self.inline = 0
        self.coalesced = 0

    def enter(self) -> None:
        """A single-file request started receiving."""
        self._active += 1

    def leave(self) -> None:
        self._active -= 1

    def prepare(self, entry: FileEntry) -> asyncio.Future[None] | None:
        """Prepare `entry`; returns None if done inline, else a future for the shared worker task."""
        if (self._active <= 1 and not self._pending) or self._inline_allowed(entry):
            self.inline += 1
            self._prepare([entry])
            return None
        self.coalesced += 1
        self._pending.append(entry)
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush)
        return self._batch

    def _inline_allowed(self, entry: FileEntry) -> bool:
        """Under load: a file typed without libmagic, while this loop iteration has budget left."""
        if self._inline_this_iteration >= INLINE_PER_ITERATION or not self._type_cheaply(entry):
            return False
        if self._inline_this_iteration == 0:
            asyncio.get_running_loop().call_soon(self._new_iteration)
        self._inline_this_iteration += 1
        return True

    def _new_iteration(self) -> None:
        self._inline_this_iteration = 0

    def _flush(self) -> None:
        entries, self._pending = self._pending, []
        batch, self._batch = self._batch, None
        assert batch is not None
        future = self._pool.submit(0, lambda: self._prepare(entries))

        def done(task: asyncio.Future[None]) -> None:
            if batch.done():
                return
            if task.cancelled():
                batch.cancel()
            elif task.exception() is not None:
                batch.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                batch.set_result(None)

        future.add_done_callback(done)
