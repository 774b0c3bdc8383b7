"""A small asyncpg pool for one of the side stores (rules, jobs), with its schema created at open.

Nodes starting together serialize the `CREATE ... IF NOT EXISTS` statements with a transaction-level
advisory lock, so they never race on the same catalog objects.
"""

from __future__ import annotations

from typing import ClassVar

import asyncpg

from rhinobox.catalog.postgres_errors import postgres_errors
from rhinobox.errors import StorageError

__all__ = ["PooledStore", "open_pool_with_schema"]


async def open_pool_with_schema(
    dsn: str,
    *,
    max_size: int,
    command_timeout: float,
    application_name: str,
    schema_lock: tuple[int, int],
    schema: str,
) -> asyncpg.Pool:
    """A pool of at most `max_size` connections, after running `schema` under `schema_lock`."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        command_timeout=command_timeout,
        server_settings={"application_name": application_name},
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *schema_lock)
            await conn.execute(schema)
    except BaseException:
        await pool.close()
        raise
    return pool


class PooledStore:
    """Base of the PostgreSQL side stores: a pool of their own, opened with their schema."""

    pool_max_size: ClassVar[int] = 2
    command_timeout: ClassVar[float] = 30.0
    application_name: ClassVar[str] = "rhinobox"
    schema_lock: ClassVar[tuple[int, int]]
    schema: ClassVar[str]

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    @postgres_errors("open a store in the database")
    async def open(self) -> None:
        self._pool = await open_pool_with_schema(
            self.dsn,
            max_size=self.pool_max_size,
            command_timeout=self.command_timeout,
            application_name=self.application_name,
            schema_lock=self.schema_lock,
            schema=self.schema,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError(f"the {type(self).__name__} is not open")
        return self._pool
