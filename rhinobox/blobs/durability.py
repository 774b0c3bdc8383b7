"""Group durability: many concurrent callers share one filesystem sync instead of one each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["GroupSyncer"]


class GroupSyncer:
    """Runs `sync` on its own thread; `await barrier()` returns after a sync that began after the call.

    While one sync runs, every new caller waits for the single next one, so a burst of N requests
    costs at most two syncs, not N.
    """

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rhinobox-sync")
        self._running: asyncio.Future[None] | None = None
        self._next: asyncio.Future[None] | None = None

    async def barrier(self) -> None:
        """Wait until everything written before this call is on stable storage."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
            if self._running is None:
                self._start_round(loop)
        waiter = self._next if self._next is not None else self._running
        assert waiter is not None
        await asyncio.shield(waiter)

    def _start_round(self, loop: asyncio.AbstractEventLoop) -> None:
        done = self._next
        assert done is not None
        self._running, self._next = done, None
        task = loop.run_in_executor(self._executor, self._sync)
        task.add_done_callback(lambda t: self._finish_round(loop, done, t))

    def _finish_round(
        self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None], task: asyncio.Future[None]
    ) -> None:
        self._running = None
        error = task.exception()
        if not done.done():
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(None)
        if done.done() and not done.cancelled() and error is not None:
            done.exception()  # mark retrieved: every waiter re-raises it through shield
        if self._next is not None:
            self._start_round(loop)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
