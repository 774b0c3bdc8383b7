"""The SQLite catalog's schema, as numbered migrations recorded in a `schema_migrations` table.

Add a migration under a new number to change the schema; never edit one that has shipped. Any
migration not yet applied runs at open, in number order, each in its own transaction.
"""

from __future__ import annotations

import time
from typing import Final

import aiosqlite

__all__ = ["MIGRATIONS", "NAME_BLOB_LIMIT", "NAME_SLOTS", "migrate"]

# blob_names keys: blob id * NAME_SLOTS + ordinal. 2^24 distinct names per blob, and blob ids below
# 2^39 so keys stay 64-bit integers; the insert trigger refuses (aborts) rather than wrap past either.
NAME_SLOTS: Final = 1 << 24
NAME_BLOB_LIMIT: Final = 1 << 39

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
    # Reading back (issue 4). blobs is rebuilt with AUTOINCREMENT so an id is never reused after a
    # delete: listings page by id (newest first). blob_prefixes holds every whole-segment prefix of
    # the categories a blob was filed under, so a category filter is an index seek, not a scan.
    # category_stats is kept by triggers, so /stats reads a few rows instead of scanning blobs.
    2: """
    CREATE TABLE blobs_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        hash TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mime TEXT NOT NULL,
        category TEXT NOT NULL,
        first_upload_at REAL NOT NULL,
        last_upload_at REAL NOT NULL,
        upload_count INTEGER NOT NULL
    );
    INSERT INTO blobs_v2 SELECT id, hash, size, mime, category, first_upload_at, last_upload_at, upload_count
        FROM blobs ORDER BY id;
    DROP TABLE blobs;
    ALTER TABLE blobs_v2 RENAME TO blobs;
    CREATE INDEX blobs_by_mime ON blobs (mime);
    CREATE INDEX blobs_by_first_upload ON blobs (first_upload_at);

    CREATE TABLE blob_prefixes (
        prefix TEXT NOT NULL,
        blob_id INTEGER NOT NULL,
        PRIMARY KEY (prefix, blob_id)
    ) WITHOUT ROWID;
    WITH RECURSIVE
        filed(blob_id, category) AS (
            SELECT id, category FROM blobs
            UNION SELECT b.id, u.category FROM uploads u JOIN blobs b ON b.hash = u.hash
        ),
        split(blob_id, prefix, rest) AS (
            SELECT blob_id, substr(category, 1, instr(category || '/', '/') - 1),
                substr(category || '/', instr(category || '/', '/') + 1) FROM filed
            UNION ALL
            SELECT blob_id, prefix || '/' || substr(rest, 1, instr(rest, '/') - 1), substr(rest, instr(rest, '/') + 1)
                FROM split WHERE rest <> ''
        )
    INSERT OR IGNORE INTO blob_prefixes (prefix, blob_id) SELECT prefix, blob_id FROM split;

    CREATE TABLE category_stats (
        category TEXT PRIMARY KEY,
        blobs INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        uploads INTEGER NOT NULL,
        upload_bytes INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO category_stats
        SELECT category, count(*), sum(size), sum(upload_count), sum(size * upload_count) FROM blobs GROUP BY category;
    CREATE TRIGGER blobs_stats_insert AFTER INSERT ON blobs BEGIN
        INSERT INTO category_stats VALUES (new.category, 1, new.size, new.upload_count, new.size * new.upload_count)
        ON CONFLICT (category) DO UPDATE SET blobs = blobs + 1, bytes = bytes + excluded.bytes,
            uploads = uploads + excluded.uploads, upload_bytes = upload_bytes + excluded.upload_bytes;
    END;
    CREATE TRIGGER blobs_stats_update AFTER UPDATE OF upload_count ON blobs BEGIN
        UPDATE category_stats SET uploads = uploads + new.upload_count - old.upload_count,
            upload_bytes = upload_bytes + new.size * (new.upload_count - old.upload_count)
            WHERE category = new.category;
    END;
    CREATE TRIGGER blobs_stats_delete AFTER DELETE ON blobs BEGIN
        UPDATE category_stats SET blobs = blobs - 1, bytes = bytes - old.size,
            uploads = uploads - old.upload_count, upload_bytes = upload_bytes - old.size * old.upload_count
            WHERE category = old.category;
        DELETE FROM category_stats WHERE category = old.category AND blobs <= 0;
    END;
    """,
    # Async ingest jobs (rhinobox/jobs): one row per job, one row per file result as it becomes final.
    3: """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        total INTEGER NOT NULL,
        done INTEGER NOT NULL,
        stored INTEGER NOT NULL,
        duplicate INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        received_bytes INTEGER NOT NULL,
        processed_bytes INTEGER NOT NULL,
        error_code TEXT,
        error_message TEXT
    );
    CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs (finished_at);
    CREATE TABLE IF NOT EXISTS job_results (
        job_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    ) WITHOUT ROWID;
    """,
    # Name search (issue 4): a trigram full-text index over each blob's distinct upload names. A row's
    # rowid is blob id * 2^24 + the name's ordinal within its blob, so walking the matches of a name
    # by descending rowid lists blobs newest first, and a cursor or time window is a rowid range: a
    # page costs about `limit` matches read, however many blobs there are and however rare the name.
    # Kept by triggers, so every writer (record_uploads, delete_blob, tools) keeps it in step; a name
    # leaves the index with its blob (uploads are only ever deleted together with their blob).
    4: f"""
    CREATE VIRTUAL TABLE blob_names USING fts5(name, tokenize = 'trigram case_sensitive 0');
    INSERT INTO blob_names (rowid, name)
        SELECT blob_id * {NAME_SLOTS} + row_number() OVER (PARTITION BY blob_id ORDER BY first_upload) - 1, name
        FROM (
            SELECT b.id AS blob_id, u.name AS name, min(u.id) AS first_upload
            FROM uploads u JOIN blobs b ON b.hash = u.hash GROUP BY b.id, u.name
        )
        ORDER BY 1;
    CREATE TRIGGER uploads_name_search_insert AFTER INSERT ON uploads BEGIN
        INSERT INTO blob_names (rowid, name)
        SELECT CASE WHEN blob_id < {NAME_BLOB_LIMIT} AND slot < base + {NAME_SLOTS}
                THEN slot ELSE RAISE(ABORT, 'blob_names: blob id or distinct names of a blob out of range') END,
            new.name
        FROM (
            SELECT blob_id, base, ifnull((SELECT rowid + 1 FROM blob_names
                WHERE rowid >= base AND rowid < base + {NAME_SLOTS} ORDER BY rowid DESC LIMIT 1), base) AS slot
            FROM (SELECT id AS blob_id, id * {NAME_SLOTS} AS base FROM blobs WHERE hash = new.hash)
        )
        WHERE NOT EXISTS (
            SELECT 1 FROM blob_names WHERE rowid >= base AND rowid < base + {NAME_SLOTS} AND name = new.name
        );
    END;
    CREATE TRIGGER blobs_name_search_delete AFTER DELETE ON blobs BEGIN
        DELETE FROM blob_names WHERE rowid >= old.id * {NAME_SLOTS} AND rowid < (old.id + 1) * {NAME_SLOTS};
    END;
    """,
    # Several serving processes on one data directory (issue 18): a job row names the process running
    # it and the time of its last lease renewal, so another process can tell a dead one's jobs apart.
    5: """
    ALTER TABLE jobs ADD COLUMN node TEXT;
    ALTER TABLE jobs ADD COLUMN heartbeat_at REAL;
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
