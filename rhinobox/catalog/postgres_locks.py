"""Per-hash arbitration between nodes, in PostgreSQL advisory locks: `HashPins` for several processes.

Three kinds of lock, each keyed by a digest:
- upload pins: shared locks, held from hashing until the upload is recorded;
- deletes (`exclusive`): an exclusive lock on the same key, so a delete never overlaps an upload;
- commit guards (`committing`): exclusive locks in a second key space around HEAD-then-PUT, so when
  two nodes receive the same new content at once exactly one of them sends it and answers `stored`.

Every lock is taken with a `pg_try_*` call and retried with backoff, never a blocking wait: a lock
waiting in PostgreSQL's queue would block pins behind it and could close a cycle across nodes. All
calls of a node go through one dedicated connection (session-level locks live as long as it does, so a
node that dies releases everything it held); concurrent calls are batched into one query. Inside the
process a `HashPins` arbitrates first, since a session never conflicts with its own locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any, Final

import asyncpg

from rhinobox.catalog.postgres_errors import postgres_errors
from rhinobox.ingest.shared_pins import SharedPins

__all__ = ["AdvisoryHashLocks"]

log = logging.getLogger(__name__)

# First key of the two-int advisory lock form: one namespace per kind of lock ("RBO\x01", "RBO\x02").
BLOB_SPACE: Final = 0x52424F01
COMMIT_SPACE: Final = 0x52424F02
RETRY_FIRST_S: Final = 0.005
RETRY_MAX_S: Final = 0.2
CONNECT_TIMEOUT_S: Final = 10.0


class _Op(Enum):
    TRY_SHARED = "pg_try_advisory_lock_shared"
    TRY_EXCLUSIVE = "pg_try_advisory_lock"
    UNLOCK_SHARED = "pg_advisory_unlock_shared"
    UNLOCK_EXCLUSIVE = "pg_advisory_unlock"


_RELEASE_OF: Final = {_Op.TRY_SHARED: _Op.UNLOCK_SHARED, _Op.TRY_EXCLUSIVE: _Op.UNLOCK_EXCLUSIVE}
# Releases run before acquisitions in a batch: a release only ever follows a lock already granted.
_BATCH_ORDER: Final = (_Op.UNLOCK_SHARED, _Op.UNLOCK_EXCLUSIVE, _Op.TRY_SHARED, _Op.TRY_EXCLUSIVE)

Key = tuple[int, int]


def lock_key(space: int, digest: str) -> Key:
    """The advisory lock key of a digest: 32 bits of it (a collision only costs a short wait)."""
    return space, int.from_bytes(bytes.fromhex(digest[:8]), "big", signed=True)


@dataclass(slots=True)
class _Request:
    op: _Op
    key: Key
    result: asyncio.Future[bool] | None


@dataclass(slots=True, eq=False)
class _SharedHold:
    """One shared lock held on the connection for however many local uploads pin the digest."""

    ready: asyncio.Future[None]
    count: int = 0


@dataclass(slots=True)
class _Batch:
    keys: dict[_Op, list[Key]] = field(default_factory=lambda: defaultdict(list))
    futures: dict[_Op, list[asyncio.Future[bool] | None]] = field(default_factory=lambda: defaultdict(list))


class AdvisoryHashLocks(SharedPins):
    """The `HashPins` interface, arbitrated across every node sharing one PostgreSQL database."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        super().__init__()
        self._shared: dict[str, _SharedHold] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.queries = 0

    @postgres_errors("connect for hash locks")
    async def open(self) -> None:
        self._conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
        self._worker = asyncio.create_task(self._run(), name="rhinobox-advisory-locks")

    async def close(self) -> None:
        for task in (*self._tasks, self._worker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._worker = None
        if self._conn is not None:
            await self._conn.close()  # the server drops every lock this node still held
            self._conn = None

    # -- upload pins ------------------------------------------------------------------------

    async def _hold_shared(self, digest: str) -> None:
        hold = self._shared.get(digest)
        if hold is None:
            hold = _SharedHold(asyncio.get_running_loop().create_future())
            self._shared[digest] = hold
            self._spawn(self._acquire_shared(digest, hold))
        hold.count += 1
        try:
            await asyncio.shield(hold.ready)
        except BaseException:
            self._drop_shared(digest)
            raise

    async def _acquire_shared(self, digest: str, hold: _SharedHold) -> None:
        key = lock_key(BLOB_SPACE, digest)
        delay = RETRY_FIRST_S
        while True:
            try:
                granted = await self._try(_Op.TRY_SHARED, key)
            except Exception as exc:
                if not hold.ready.done():
                    hold.ready.set_exception(exc)
                return
            if granted:
                if hold.count == 0:  # every pinner gave up meanwhile
                    self._release(_Op.TRY_SHARED, key)
                    hold.ready.cancel()
                else:
                    hold.ready.set_result(None)
                return
            if hold.count == 0:
                hold.ready.cancel()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _drop_shared(self, digest: str) -> None:
        hold = self._shared.get(digest)
        if hold is None:
            return
        hold.count -= 1
        if hold.count > 0:
            return
        del self._shared[digest]
        ready = hold.ready
        if ready.done() and not ready.cancelled() and ready.exception() is None:
            self._release(_Op.TRY_SHARED, lock_key(BLOB_SPACE, digest))

    # -- deletes and commits -------------------------------------------------------------------

    @asynccontextmanager
    async def exclusive(self, digest: str) -> AsyncIterator[None]:
        """Hold `digest` alone on every node: no upload holds a pin on it until the block exits."""
        key = lock_key(BLOB_SPACE, digest)
        delay = RETRY_FIRST_S
        while True:
            # Hold the local side only for the try itself, never while waiting for other nodes.
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(self._local.exclusive(digest))
                if await self._try(_Op.TRY_EXCLUSIVE, key):
                    try:
                        yield
                    finally:
                        self._release(_Op.TRY_EXCLUSIVE, key)
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    @asynccontextmanager
    async def committing(self, digests: Iterable[str]) -> AsyncIterator[None]:
        """Hold the commit guard of each digest (on every node) while their blobs are sent."""
        wanted = sorted(set(digests))
        if not wanted:
            yield
            return
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._local.committing(wanted))
            # Sorted order on every node, as locally: no cycle between two holders.
            keys = [lock_key(COMMIT_SPACE, digest) for digest in wanted]
            held = await self._hold_exclusive_in_order(keys)
            stack.callback(self._release_all, _Op.TRY_EXCLUSIVE, held)
            yield

    async def _hold_exclusive_in_order(self, keys: list[Key]) -> list[Key]:
        """Take every key, trying them all at once; while waiting hold only a prefix of the order."""
        held: list[Key] = []
        try:
            while len(held) < len(keys):
                rest = keys[len(held) :]
                blocked: Key | None = None
                for key, ok in zip(rest, await self._try_many(_Op.TRY_EXCLUSIVE, rest), strict=True):
                    if blocked is None and ok:
                        held.append(key)
                    elif blocked is None:
                        blocked = key
                    elif ok:
                        self._release(_Op.TRY_EXCLUSIVE, key)  # past the refused key: let go
                if blocked is not None:
                    await self._wait_exclusive(blocked)
                    held.append(blocked)
        except BaseException:
            for key in held:
                self._release(_Op.TRY_EXCLUSIVE, key)
            raise
        return held

    async def _wait_exclusive(self, key: Key) -> None:
        delay = RETRY_FIRST_S
        while not await self._try(_Op.TRY_EXCLUSIVE, key):
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    # -- the connection ------------------------------------------------------------------------

    async def _try(self, op: _Op, key: Key) -> bool:
        return (await self._try_many(op, [key]))[0]

    async def _try_many(self, op: _Op, keys: list[Key]) -> list[bool]:
        """Try-locks, batched; whatever the server granted to a caller that went away is released."""
        futures = [self._submit(op, key) for key in keys]
        try:
            return list(await asyncio.shield(asyncio.gather(*futures)))
        except BaseException:
            for key, future in zip(keys, futures, strict=True):
                future.add_done_callback(partial(self._release_if_granted, op, key))
            raise

    def _release_if_granted(self, op: _Op, key: Key, future: asyncio.Future[bool]) -> None:
        if not future.cancelled() and future.exception() is None and future.result():
            self._release(op, key)

    def _submit(self, op: _Op, key: Key) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(op, key, future))
        return future

    def _release(self, op: _Op, key: Key) -> None:
        self._queue.put_nowait(_Request(_RELEASE_OF.get(op, op), key, None))

    def _release_all(self, op: _Op, keys: list[Key]) -> None:
        for key in keys:
            self._release(op, key)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        """Drain the queue in batches: one query per kind of call, results matched by position."""
        while True:
            requests = [await self._queue.get()]
            while not self._queue.empty():
                requests.append(self._queue.get_nowait())
            batch = _Batch()
            for request in requests:
                batch.keys[request.op].append(request.key)
                batch.futures[request.op].append(request.result)
            for op in _BATCH_ORDER:
                if batch.keys.get(op):
                    await self._execute(op, batch.keys[op], batch.futures[op])

    async def _execute(self, op: _Op, keys: list[Key], futures: list[asyncio.Future[bool] | None]) -> None:
        query = (
            f"SELECT t.i, {op.value}(t.a, t.b) AS ok "
            "FROM unnest($1::int4[], $2::int4[]) WITH ORDINALITY AS t(a, b, i) ORDER BY t.i"
        )
        try:
            conn = await self._connection()
            rows = await conn.fetch(query, [k[0] for k in keys], [k[1] for k in keys])
            self.queries += 1
        except Exception as exc:
            log.error("advisory lock %s failed for %d key(s): %s", op.name, len(keys), exc)
            for future in futures:  # each caller its own error: one instance would gather every traceback
                if future is not None and not future.done():
                    future.set_exception(postgres_errors.translated(exc, "lock a hash across nodes"))
            return
        for row, future in zip(rows, futures, strict=True):
            if future is not None and not future.done():
                future.set_result(bool(row["ok"]))

    async def _connection(self) -> asyncpg.Connection:
        """The lock connection; reconnects if it was lost (locks it held are gone with it)."""
        if self._conn is None or self._conn.is_closed():
            log.warning("advisory lock connection lost; reconnecting (locks held until now were released)")
            self._conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
        return self._conn
