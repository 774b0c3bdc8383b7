"""The PostgreSQL catalog's schema, as numbered migrations recorded in a `schema_migrations` table.

Same rules as the SQLite schema: add a migration under a new number, never edit one that shipped.
All pending migrations run in one transaction under an advisory lock, so several nodes starting at
once migrate exactly once (PostgreSQL DDL is transactional).
"""

from __future__ import annotations

import time
from typing import Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "migrate"]

# Any constant works; it only has to differ from the other advisory locks RhinoBox takes.
MIGRATION_LOCK: Final = 0x52424F58_00000001

MIGRATIONS: Final[dict[int, str]] = {
    # blobs: one row per distinct content (ids from a sequence: never reused, listings page by id);
    # uploads: one row per file received. Hashes and categories sort bytewise (COLLATE "C") whatever
    # the database's locale, like SQLite. blob_prefixes holds every whole-segment prefix of the
    # categories a blob was filed under (a category filter is an index walk); category_stats keeps
    # the totals that /stats reads, updated in the same transactions as the rows they count.
    1: """
    CREATE TABLE blobs (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hash TEXT COLLATE "C" NOT NULL UNIQUE,
        size BIGINT NOT NULL,
        mime TEXT NOT NULL,
        category TEXT COLLATE "C" NOT NULL,
        first_upload_at DOUBLE PRECISION NOT NULL,
        last_upload_at DOUBLE PRECISION NOT NULL,
        upload_count BIGINT NOT NULL
    );
    CREATE INDEX blobs_by_mime ON blobs (mime, id);
    CREATE INDEX blobs_by_first_upload ON blobs (first_upload_at);
    CREATE TABLE uploads (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hash TEXT COLLATE "C" NOT NULL REFERENCES blobs (hash) ON DELETE CASCADE,
        name TEXT NOT NULL,
        category TEXT COLLATE "C" NOT NULL,
        hint TEXT,
        comment TEXT,
        claimed_type TEXT,
        uploaded_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX uploads_by_hash ON uploads (hash, id);
    CREATE TABLE blob_prefixes (
        prefix TEXT COLLATE "C" NOT NULL,
        blob_id BIGINT NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
        PRIMARY KEY (prefix, blob_id)
    );
    CREATE INDEX blob_prefixes_by_blob ON blob_prefixes (blob_id);
    CREATE TABLE category_stats (
        category TEXT COLLATE "C" PRIMARY KEY,
        blobs BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        uploads BIGINT NOT NULL,
        upload_bytes BIGINT NOT NULL
    );
    """,
    # Name search (issue 4): a trigram index on upload names serves `name ILIKE '%...%'` (3 or more
    # characters), so a rare name is an index lookup instead of a walk of every blob. pg_trgm is a
    # trusted extension (PostgreSQL 13+): a database owner may create it. Indexes existing names too.
    2: """
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX uploads_by_name_trigrams ON uploads USING gin (name gin_trgm_ops);
    """,
}


async def migrate(conn: asyncpg.Connection | PoolConnectionProxy) -> list[int]:
    """Apply every migration not yet recorded, in number order; returns the numbers applied."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (id INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
        )
        applied = {int(row["id"]) for row in await conn.fetch("SELECT id FROM schema_migrations")}
        pending = sorted(set(MIGRATIONS) - applied)
        for number in pending:
            await conn.execute(MIGRATIONS[number])
            await conn.execute("INSERT INTO schema_migrations (id, applied_at) VALUES ($1, $2)", number, time.time())
    return pending
