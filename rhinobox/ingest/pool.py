"""The ingest worker pool: threads for the blocking parts of the pipeline, with a bounded queue.

Work is submitted in chunks of many files (a thread hop per small file costs more than the work).
Queue capacity is counted in files: a new request is refused with `Overloaded` when the queue is
full, and a request already streaming waits for room instead (backpressure on its socket).

Work handed to a thread is never abandoned: cancelling the coroutine that waits for it does not stop
the thread, so slots (and whatever `on_done` releases, such as an arena the thread reads) are given
back only when the thread has really finished.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from rhinobox.errors import Overloaded

__all__ = ["WorkerPool"]

T = TypeVar("T")


class WorkerPool:
    """`workers` threads and `capacity` file slots shared by every request."""

    def __init__(self, workers: int, capacity: int) -> None:
        self.workers = workers
        self.capacity = capacity
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rhinobox-ingest")
        self._queued = 0
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._room_waiters: list[asyncio.Future[None]] = []
        self.files_done = 0

    @property
    def queued(self) -> int:
        """Files submitted and not finished."""
        return self._queued

    @property
    def busy(self) -> int:
        """Tasks running on a worker thread right now."""
        return self._busy

    def admit(self) -> None:
        """Refuse a new request when the queue is full (answer 503, not unbounded growth)."""
        if self._queued >= self.capacity:
            raise Overloaded()

    async def reserve(self, files: int) -> int:
        """Wait until `files` slots are free and take them; returns the count to pass to `submit`."""
        files = min(files, self.capacity)
        while self._queued + files > self.capacity:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._room_waiters:
                    self._room_waiters.remove(waiter)
        self._queued += files
        return files

    def submit(
        self, reserved: int, fn: Callable[[], T], on_done: Callable[[], None] | None = None
    ) -> asyncio.Future[T]:
        """Start `fn` on a worker with `reserved` slots; they (and `on_done`) are released when it returns."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._track, fn)

        def finished(_: asyncio.Future[T]) -> None:
            self._release(reserved)
            if on_done is not None:
                on_done()

        future.add_done_callback(finished)
        return future

    async def run(self, files: int, fn: Callable[[], T]) -> T:
        """Run `fn` (which handles `files` files) on a worker, waiting for queue room first."""
        reserved = await self.reserve(files)
        return await asyncio.shield(self.submit(reserved, fn))

    def submit_io(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Start one blocking call (a large block write) on a worker without taking queue slots."""
        return asyncio.get_running_loop().run_in_executor(self._executor, self._track, fn)

    async def run_io(self, fn: Callable[[], T]) -> T:
        return await asyncio.shield(self.submit_io(fn))

    def _release(self, files: int) -> None:
        self._queued -= files
        self.files_done += files
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _track(self, fn: Callable[[], T]) -> T:
        with self._busy_lock:
            self._busy += 1
        try:
            return fn()
        finally:
            with self._busy_lock:
                self._busy -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True)
