"""The SQLite catalog's schema, as numbered migrations recorded in a `schema_migrations` table.

Add a migration under a new number to change the schema; never edit one that has shipped. Any
migration not yet applied runs at open, in number order, each in its own transaction.
"""

from __future__ import annotations

import time
from typing import Final

import aiosqlite

__all__ = ["MIGRATIONS", "migrate"]

MIGRATIONS: Final[dict[int, str]] = {
    # blobs: one row per distinct content; uploads: one row per file received.
    1: """
    CREATE TABLE blobs (
        id INTEGER PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mime TEXT NOT NULL,
        category TEXT NOT NULL,
        first_upload_at REAL NOT NULL,
        last_upload_at REAL NOT NULL,
        upload_count INTEGER NOT NULL
    );
    CREATE TABLE uploads (
        id INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        hint TEXT,
        comment TEXT,
        claimed_type TEXT,
        uploaded_at REAL NOT NULL
    );
    CREATE INDEX uploads_by_hash ON uploads (hash);
    """,
}


async def migrate(db: aiosqlite.Connection) -> None:
    """Apply every migration not yet recorded, in number order."""
    await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (id INTEGER PRIMARY KEY, applied_at REAL)")
    async with db.execute("SELECT id FROM schema_migrations") as cursor:
        applied = {int(row[0]) for row in await cursor.fetchall()}
    for number in sorted(set(MIGRATIONS) - applied):
        await db.executescript(
            f"BEGIN IMMEDIATE;\n{MIGRATIONS[number]}\n"
            f"INSERT INTO schema_migrations (id, applied_at) VALUES ({number}, {time.time()});\nCOMMIT;"
        )
