"""Job records in PostgreSQL, shared by every node on the catalog's database: any node answers for any job.

Each row names the node running the job and carries a lease: `heartbeat_at`, renewed by that node
every few seconds and by each progress write, on the database's clock (so nodes' clocks may disagree).
A queued or running job whose lease ran out is one whose node died; any node that notices marks it
interrupted. Rows of final jobs are never rewritten by a late writer: an interrupted job stays so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from rhinobox.catalog.postgres_errors import postgres_errors
from rhinobox.catalog.postgres_pool import PooledStore
from rhinobox.jobs.model import FINAL_STATES, FileResult, Job, JobError, JobState, job_columns

__all__ = ["PostgresJobStore"]

POOL_MAX_SIZE: Final = 4
COMMAND_TIMEOUT_S: Final = 60.0
# Two-int advisory lock form ("RBO" + 0x11, 1): apart from the catalog's and the rules' keys.
SCHEMA_LOCK: Final = (0x52424F11, 1)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    total BIGINT NOT NULL,
    done BIGINT NOT NULL,
    stored BIGINT NOT NULL,
    duplicate BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    received_bytes BIGINT NOT NULL,
    processed_bytes BIGINT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    node TEXT NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs (finished_at);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (heartbeat_at) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS job_results (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""
_COLUMNS: Final = (
    "id, state, created_at, updated_at, finished_at, total, done, stored, duplicate, failed,"
    " received_bytes, processed_bytes, error_code, error_message"
)
_UNFINISHED: Final = [state.value for state in JobState if state not in FINAL_STATES]
# A row already final (e.g. interrupted by another node that took this one for dead) is left alone.
_UPSERT: Final = f"""
INSERT INTO jobs AS j ({_COLUMNS}, node, heartbeat_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, clock_timestamp())
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state, updated_at = excluded.updated_at, finished_at = excluded.finished_at,
    total = excluded.total, done = excluded.done, stored = excluded.stored,
    duplicate = excluded.duplicate, failed = excluded.failed, received_bytes = excluded.received_bytes,
    processed_bytes = excluded.processed_bytes, error_code = excluded.error_code,
    error_message = excluded.error_message, node = excluded.node, heartbeat_at = excluded.heartbeat_at
WHERE j.state = ANY($16::text[])
"""
_INSERT_RESULT: Final = "INSERT INTO job_results (job_id, idx, result) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
_HEARTBEAT: Final = """
UPDATE jobs SET heartbeat_at = clock_timestamp() WHERE id = ANY($1::text[]) AND node = $2 AND state = ANY($3::text[])
"""
_INTERRUPT: Final = """
UPDATE jobs SET state = $1, finished_at = $2, updated_at = $2, error_code = $3, error_message = $4
WHERE state = ANY($5::text[]) AND heartbeat_at < clock_timestamp() - make_interval(secs => $6)
"""


def _row_of(job: Job, node: str) -> tuple[object, ...]:
    return (*job_columns(job), node, _UNFINISHED)


def _job_of(row: asyncpg.Record) -> Job:
    code: Any = row["error_code"]
    return Job(
        id=row["id"],
        state=JobState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        total=row["total"],
        done=row["done"],
        stored=row["stored"],
        duplicate=row["duplicate"],
        failed=row["failed"],
        received_bytes=row["received_bytes"],
        processed_bytes=row["processed_bytes"],
        error=JobError(code, row["error_message"]) if code is not None else None,
    )


def _affected(status: str) -> int:
    """Rows an UPDATE/DELETE touched, from asyncpg's command tag ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresJobStore(PooledStore):
    """A shared `JobStore` in the PostgreSQL database named by `dsn`; `node` is this process's id."""

    shared: Final = True
    pool_max_size = POOL_MAX_SIZE
    command_timeout = COMMAND_TIMEOUT_S
    application_name = "rhinobox-jobs"
    schema_lock = SCHEMA_LOCK
    schema = _SCHEMA

    def __init__(self, dsn: str, node: str) -> None:
        super().__init__(dsn)
        self.node = node

    @postgres_errors("save a job")
    async def save(self, job: Job, new_results: Sequence[FileResult]) -> None:
        rows = [(job.id, int(r["index"]), json.dumps(r, separators=(",", ":"))) for r in new_results]
        async with self._db().acquire() as conn, conn.transaction():
            status = await conn.execute(_UPSERT, *_row_of(job, self.node))
            if rows and _affected(status):  # a row left final by another node takes no more results
                await conn.executemany(_INSERT_RESULT, rows)

    @postgres_errors("delete a job")
    async def delete(self, job_id: str) -> None:
        await self._db().execute("DELETE FROM jobs WHERE id = $1", job_id)

    @postgres_errors("read a job")
    async def load(self, job_id: str, *, results: bool = True) -> Job | None:
        async with self._db().acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            # One snapshot: the row's counters and the results agree (they are written together).
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1", job_id)
            if row is None:
                return None
            job = _job_of(row)
            if not results:
                return job
            rows = await conn.fetch("SELECT result FROM job_results WHERE job_id = $1 ORDER BY idx", job_id)
        job.results = [json.loads(r["result"]) for r in rows]
        return job

    @postgres_errors("renew job leases")
    async def heartbeat(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            await self._db().execute(_HEARTBEAT, list(job_ids), self.node, _UNFINISHED)

    @postgres_errors("mark abandoned jobs interrupted")
    async def interrupt_unfinished(self, now: float, error: JobError, *, lease: float) -> int:
        status = await self._db().execute(
            _INTERRUPT, JobState.INTERRUPTED.value, now, error.code, error.message, _UNFINISHED, lease
        )
        return _affected(status)

    @postgres_errors("expire old jobs")
    async def expire(self, finished_before: float) -> int:
        status = await self._db().execute("DELETE FROM jobs WHERE finished_at < $1", finished_before)
        return _affected(status)
