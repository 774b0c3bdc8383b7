"""A small asyncpg pool for one of the side stores (rules, jobs), with its schema created at open.

Nodes starting together serialize the `CREATE ... IF NOT EXISTS` statements with a transaction-level
advisory lock, so they never race on the same catalog objects.
"""

from __future__ import annotations

import asyncpg

__all__ = ["open_pool_with_schema"]


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
