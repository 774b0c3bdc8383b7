"""SQLite catalog (aiosqlite, WAL): one writer connection fed by a queue, reads on a second connection.

Concurrent `record_uploads` calls are grouped: whatever is queued when the writer wakes goes into
one transaction, so N concurrent single-file requests cost one commit (one WAL fsync), not N.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import aiosqlite

from rhinobox.catalog.base import UploadRecord
from rhinobox.catalog.sqlite_schema import migrate

__all__ = ["SQLiteCatalog"]

CATALOG_FILENAME: Final = "catalog.sqlite3"
BUSY_TIMEOUT_MS: Final = 30_000
LOOKUP_CHUNK: Final = 500  # stays under SQLite's bound-parameter limit

WriteJob = Callable[[aiosqlite.Connection], Awaitable[object]]

_INSERT_BLOB: Final = """
INSERT INTO blobs (hash, size, mime, category, first_upload_at, last_upload_at, upload_count)
VALUES (?, ?, ?, ?, ?, ?, 1)
ON CONFLICT(hash) DO UPDATE SET
    last_upload_at = max(last_upload_at, excluded.last_upload_at),
    upload_count = upload_count + 1
"""
_INSERT_UPLOAD: Final = """
INSERT INTO uploads (hash, name, category, hint, comment, claimed_type, uploaded_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""


class SQLiteCatalog:
    """A `Catalog` in one SQLite file under the data directory."""

    def __init__(self, path: Path, *, durable: bool) -> None:
        self.path = path
        self._durable = durable
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[tuple[WriteJob, asyncio.Future[object]]] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self.commits = 0

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, durable: bool) -> SQLiteCatalog:
        return cls(data_dir / CATALOG_FILENAME, durable=durable)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await migrate(self._writer)
        self._reader = await self._connect()
        self._writer_task = asyncio.create_task(self._write_loop(), name="rhinobox-catalog-writer")

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await db.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")
        return db

    async def close(self) -> None:
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._reader = self._writer = None

    async def ping(self) -> None:
        async with self._read().execute("SELECT 1") as cursor:
            await cursor.fetchone()

    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("catalog is not open")
        return self._reader

    async def write(self, job: WriteJob) -> object:
        """Run `job` inside the writer's next transaction and return its result."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, future))
        return await future

    async def _write_loop(self) -> None:
        assert self._writer is not None
        db = self._writer
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._run_group(db, batch)

    async def _run_group(self, db: aiosqlite.Connection, batch: list[tuple[WriteJob, asyncio.Future[object]]]) -> None:
        """One transaction for the whole group; a job that fails is retried alone so others commit."""
        try:
            await db.execute("BEGIN IMMEDIATE")
            results = [await job(db) for job, _ in batch]
            await db.execute("COMMIT")
            self.commits += 1
        except Exception:
            with contextlib.suppress(Exception):
                await db.execute("ROLLBACK")
            if len(batch) == 1:
                job, future = batch[0]
                try:
                    await db.execute("BEGIN IMMEDIATE")
                    result = await job(db)
                    await db.execute("COMMIT")
                    self.commits += 1
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await db.execute("ROLLBACK")
                    if not future.done():
                        future.set_exception(exc)
                    return
                if not future.done():
                    future.set_result(result)
                return
            for item in batch:
                await self._run_group(db, [item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def record_uploads(self, records: Sequence[UploadRecord]) -> None:
        if not records:
            return
        blob_rows = [(r.digest, r.size, r.mime, r.blob_category, r.uploaded_at, r.uploaded_at) for r in records]
        upload_rows = [
            (r.digest, r.name, r.category, r.hint, r.comment, r.claimed_type, r.uploaded_at) for r in records
        ]

        async def job(db: aiosqlite.Connection) -> None:
            await db.executemany(_INSERT_BLOB, blob_rows)
            await db.executemany(_INSERT_UPLOAD, upload_rows)

        await self.write(job)

    async def known_digests(self, digests: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(digests))
        found: set[str] = set()
        db = self._read()
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            async with db.execute(f"SELECT hash FROM blobs WHERE hash IN ({marks})", chunk) as cursor:
                found.update(row[0] for row in await cursor.fetchall())
        return found

    async def iter_digests(self, page_size: int = 1000) -> AsyncIterator[list[str]]:
        after = ""
        db = self._read()
        while True:
            async with db.execute(
                "SELECT hash FROM blobs WHERE hash > ? ORDER BY hash LIMIT ?", (after, page_size)
            ) as cursor:
                page = [row[0] for row in await cursor.fetchall()]
            if not page:
                return
            yield page
            after = page[-1]
