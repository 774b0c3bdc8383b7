"""Job records in SQLite: in the catalog's database (migration 3), written through the catalog's writer.

With the SQLite catalog, job writes join the catalog's grouped transactions and reads use a connection
of their own (WAL lets them run beside the writer). With any other catalog, jobs get their own SQLite
file in the data directory, so they still outlive the process.

With a `node` id (several serving processes on the data directory) the store is shared, as PostgreSQL's
is between nodes: each row names the process running the job and carries a lease it renews.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import aiosqlite

from rhinobox.catalog.base import Catalog
from rhinobox.catalog.sqlite import BUSY_TIMEOUT_MS, SQLiteCatalog
from rhinobox.catalog.sqlite_errors import sqlite_errors
from rhinobox.catalog.sqlite_schema import MIGRATIONS
from rhinobox.catalog.sqlite_writer import SQLiteWriter, WriteJob
from rhinobox.jobs.model import FINAL_STATES, FileResult, Job, JobError, JobState, job_columns

__all__ = ["JOBS_FILENAME", "SQLiteJobStore", "job_store_for"]

JOBS_FILENAME: Final = "jobs.sqlite3"
JOBS_MIGRATION: Final = 3

Writer = Callable[[WriteJob[object]], Awaitable[object]]

_COLUMNS: Final = (
    "id, state, created_at, updated_at, finished_at, total, done, stored, duplicate, failed,"
    " received_bytes, processed_bytes, error_code, error_message"
)
_UPSERT: Final = f"""
INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    state = excluded.state, updated_at = excluded.updated_at, finished_at = excluded.finished_at,
    total = excluded.total, done = excluded.done, stored = excluded.stored,
    duplicate = excluded.duplicate, failed = excluded.failed, received_bytes = excluded.received_bytes,
    processed_bytes = excluded.processed_bytes, error_code = excluded.error_code,
    error_message = excluded.error_message
"""
_INSERT_RESULT: Final = "INSERT OR REPLACE INTO job_results (job_id, idx, result) VALUES (?, ?, ?)"
_UNFINISHED: Final = tuple(state.value for state in JobState if state not in FINAL_STATES)
_UNFINISHED_MARKS: Final = ",".join("?" * len(_UNFINISHED))
# Shared: a row already final (interrupted by a process that took this one for dead) is left alone.
_UPSERT_LEASED: Final = f"""
INSERT INTO jobs ({_COLUMNS}, node, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    state = excluded.state, updated_at = excluded.updated_at, finished_at = excluded.finished_at,
    total = excluded.total, done = excluded.done, stored = excluded.stored,
    duplicate = excluded.duplicate, failed = excluded.failed, received_bytes = excluded.received_bytes,
    processed_bytes = excluded.processed_bytes, error_code = excluded.error_code,
    error_message = excluded.error_message, node = excluded.node, heartbeat_at = excluded.heartbeat_at
WHERE jobs.state IN ({_UNFINISHED_MARKS})
"""
_EXPIRED_LEASE: Final = f"state IN ({_UNFINISHED_MARKS}) AND coalesce(heartbeat_at, updated_at) < ?"


def _row_of(job: Job) -> tuple[object, ...]:
    return job_columns(job)


def _job_of(row: Sequence[Any]) -> Job:
    (id_, state, created, updated, finished, total, done, stored, dup, failed, received, processed, code, msg) = row
    return Job(
        id=str(id_),
        state=JobState(str(state)),
        created_at=float(created),
        updated_at=float(updated),
        finished_at=None if finished is None else float(finished),
        total=int(total),
        done=int(done),
        stored=int(stored),
        duplicate=int(dup),
        failed=int(failed),
        received_bytes=int(received),
        processed_bytes=int(processed),
        error=JobError(str(code), str(msg)) if code is not None else None,
    )


class SQLiteJobStore:
    """A `JobStore` on one SQLite file; `writer` runs a write job in a transaction (or we use our own).

    With `node` (only beside the SQLite catalog, whose migrations add the lease columns) it is shared
    by the serving processes of one data directory; without, the data dir lock keeps others out.
    """

    def __init__(self, path: Path, writer: Writer | None = None, *, node: str | None = None) -> None:
        self.path = path
        self.node = node if writer is not None else None
        self.shared = self.node is not None
        self._shared_writer = writer
        self._own_writer: SQLiteWriter | None = None
        self._reader: aiosqlite.Connection | None = None

    @sqlite_errors("open the job store")
    async def open(self) -> None:
        if self._shared_writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._own_writer = SQLiteWriter(self._connect_writer, name="rhinobox-jobs-writer")
            await self._own_writer.start()
        self._reader = await self._connect()

    def _connect_writer(self) -> sqlite3.Connection:
        """Our own write connection (no SQLite catalog to share one with); runs on the writer thread."""
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(MIGRATIONS[JOBS_MIGRATION])
        except BaseException:
            db.close()
            raise
        return db

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except BaseException:
            await db.close()  # else its thread outlives the failed open and keeps the process from exiting
            raise
        return db

    async def close(self) -> None:
        if self._own_writer is not None:
            await self._own_writer.close()
            self._own_writer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    async def _write(self, job: WriteJob[object]) -> object:
        if self._shared_writer is not None:
            return await self._shared_writer(job)
        if self._own_writer is None:
            raise RuntimeError("job store is not open")
        return await self._own_writer.submit(job)

    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("job store is not open")
        return self._reader

    @sqlite_errors("save a job")
    async def save(self, job: Job, new_results: Sequence[FileResult]) -> None:
        result_rows = [(job.id, int(r["index"]), json.dumps(r, separators=(",", ":"))) for r in new_results]
        node = self.node

        def write(db: sqlite3.Connection) -> None:
            if node is None:
                db.execute(_UPSERT, _row_of(job))
            elif not db.execute(_UPSERT_LEASED, (*_row_of(job), node, time.time(), *_UNFINISHED)).rowcount:
                return  # another process recorded it interrupted: it takes no more results
            if result_rows:
                db.executemany(_INSERT_RESULT, result_rows)

        await self._write(write)

    async def _count(self, write: WriteJob[object]) -> int:
        count = await self._write(write)
        assert isinstance(count, int)
        return count

    @sqlite_errors("delete a job")
    async def delete(self, job_id: str) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

        await self._write(write)

    @sqlite_errors("read a job")
    async def load(self, job_id: str, *, results: bool = True) -> Job | None:
        db = self._read()
        async with db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        job = _job_of(row)
        if not results:
            return job
        async with db.execute("SELECT result FROM job_results WHERE job_id = ? ORDER BY idx", (job_id,)) as cursor:
            job.results = [json.loads(r[0]) for r in await cursor.fetchall()]
        return job

    @sqlite_errors("renew job leases")
    async def heartbeat(self, job_ids: Sequence[str]) -> None:
        node = self.node
        if node is None or not job_ids:
            return  # one process per data dir: its jobs cannot be taken for abandoned
        ids = list(job_ids)
        marks = ",".join("?" * len(ids))
        sql = f"UPDATE jobs SET heartbeat_at = ? WHERE id IN ({marks}) AND node = ? AND state IN ({_UNFINISHED_MARKS})"

        def write(db: sqlite3.Connection) -> None:
            db.execute(sql, (time.time(), *ids, node, *_UNFINISHED))

        await self._write(write)

    @sqlite_errors("mark unfinished jobs interrupted")
    async def interrupt_unfinished(self, now: float, error: JobError, *, lease: float) -> int:
        if self.node is not None:
            return await self._interrupt_expired(now, error, lease)
        marks = _UNFINISHED_MARKS

        def write(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                f"UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, error_code = ?, error_message = ?"
                f" WHERE state IN ({marks})",
                (JobState.INTERRUPTED.value, now, now, error.code, error.message, *_UNFINISHED),
            )
            return cursor.rowcount

        return await self._count(write)

    async def _interrupt_expired(self, now: float, error: JobError, lease: float) -> int:
        """Shared: only the jobs whose lease ran out; looked for with a read first (this runs every few
        seconds in every process, and an empty write would still cost a commit and a sync)."""
        bound = time.time() - lease
        query = f"SELECT 1 FROM jobs WHERE {_EXPIRED_LEASE} LIMIT 1"
        async with self._read().execute(query, (*_UNFINISHED, bound)) as cursor:
            if await cursor.fetchone() is None:
                return 0

        def write(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, error_code = ?, error_message = ?"
                f" WHERE {_EXPIRED_LEASE}",
                (JobState.INTERRUPTED.value, now, now, error.code, error.message, *_UNFINISHED, bound),
            )
            return cursor.rowcount

        return await self._count(write)

    @sqlite_errors("expire old jobs")
    async def expire(self, finished_before: float) -> int:
        def write(db: sqlite3.Connection) -> int:
            db.execute(
                "DELETE FROM job_results WHERE job_id IN (SELECT id FROM jobs WHERE finished_at < ?)",
                (finished_before,),
            )
            cursor = db.execute("DELETE FROM jobs WHERE finished_at < ?", (finished_before,))
            return cursor.rowcount

        return await self._count(write)


def job_store_for(catalog: Catalog, data_dir: Path, *, node: str | None = None) -> SQLiteJobStore:
    """Jobs beside the catalog when it is SQLite (shared by the data dir's processes if `node` is given);
    otherwise in their own SQLite file in the data dir."""
    if isinstance(catalog, SQLiteCatalog):
        return SQLiteJobStore(catalog.path, writer=catalog.write, node=node)
    return SQLiteJobStore(data_dir / JOBS_FILENAME)
