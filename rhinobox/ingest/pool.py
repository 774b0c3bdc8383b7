"""The ingest worker pool: threads for the blocking parts of the pipeline, with a bounded queue.

Work is submitted in chunks of many files (a thread hop per small file costs more than the work).
Queue capacity is counted in files: a new request is refused with `Overloaded` when the queue is
full, and a request already streaming waits for room instead (backpressure on its socket).
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
        self.files_done = 0
        self._busy_lock = threading.Lock()
        self._room = asyncio.Condition()

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

    async def run(self, files: int, fn: Callable[[], T]) -> T:
        """Run `fn` (which handles `files` files) on a worker, waiting for queue room first."""
        files = min(files, self.capacity)
        if self._queued + files > self.capacity:
            async with self._room:
                await self._room.wait_for(lambda: self._queued + files <= self.capacity)
        self._queued += files
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._track, fn)
        finally:
            self._queued -= files
            self.files_done += files
            if self._room._waiters:  # skip the lock round trip when nobody waits
                async with self._room:
                    self._room.notify_all()

    def _track(self, fn: Callable[[], T]) -> T:
        with self._busy_lock:
            self._busy += 1
        try:
            return fn()
        finally:
            with self._busy_lock:
                self._busy -= 1

    async def run_io(self, fn: Callable[[], T]) -> T:
        """Run one blocking call (a large write, a sync) on a worker without taking queue slots."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
