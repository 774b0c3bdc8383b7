"""PostgreSQL catalog (asyncpg): a connection pool, shared by every node pointed at the database.

Writes are grouped like SQLite's: the uploads that concurrent requests queue while a transaction runs
go into the next one, merged into set-based statements: one `INSERT ... SELECT FROM unnest(...) ON
CONFLICT` for their blobs (sorted by hash, so concurrent transactions on several nodes lock rows in
one order and cannot deadlock), one for category prefixes, one for the totals, and one COPY for the
upload rows. Reads go straight to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from rhinobox.catalog.base import (
    MAX_PAGE,
    BlobInfo,
    BlobPage,
    BlobQuery,
    CatalogStats,
    CategoryStats,
    StoredUpload,
    UploadRecord,
    category_prefixes,
    query_can_match,
)
from rhinobox.catalog.postgres_errors import postgres_errors
from rhinobox.catalog.postgres_locks import AdvisoryHashLocks
from rhinobox.catalog.postgres_schema import migrate
from rhinobox.errors import StorageError

__all__ = ["PostgresCatalog"]

POOL_MIN_SIZE: Final = 1
POOL_MAX_SIZE: Final = 10
COMMAND_TIMEOUT_S: Final = 60.0
MAX_ID: Final = 2**63 - 1  # BIGINT
UPLOAD_COLUMNS: Final = ("hash", "name", "category", "hint", "comment", "claimed_type", "uploaded_at")

Connection = asyncpg.Connection | PoolConnectionProxy

_UPSERT_BLOBS: Final = """
INSERT INTO blobs AS b (hash, size, mime, category, first_upload_at, last_upload_at, upload_count)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[], $6::float8[], $7::bigint[])
ON CONFLICT (hash) DO UPDATE SET
    last_upload_at = GREATEST(b.last_upload_at, excluded.last_upload_at),
    upload_count = b.upload_count + excluded.upload_count
RETURNING b.id, b.hash, b.size, b.category, (b.xmax = 0) AS inserted
"""
_INSERT_PREFIXES: Final = """
INSERT INTO blob_prefixes (prefix, blob_id) SELECT * FROM unnest($1::text[], $2::bigint[])
ON CONFLICT DO NOTHING
"""
_ADD_STATS: Final = """
INSERT INTO category_stats AS s (category, blobs, bytes, uploads, upload_bytes)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
ON CONFLICT (category) DO UPDATE SET
    blobs = s.blobs + excluded.blobs,
    bytes = s.bytes + excluded.bytes,
    uploads = s.uploads + excluded.uploads,
    upload_bytes = s.upload_bytes + excluded.upload_bytes
"""
_BLOB_COLUMNS: Final = "b.id, b.hash, b.size, b.mime, b.category, b.first_upload_at, b.last_upload_at, b.upload_count"
_UPLOAD_COLUMNS: Final = "id, name, category, hint, comment, claimed_type, uploaded_at"
_FIRST_NAME: Final = "(SELECT u.name FROM uploads u WHERE u.hash = b.hash ORDER BY u.id LIMIT 1)"


@dataclass(slots=True)
class _Write:
    records: Sequence[UploadRecord]
    done: asyncio.Future[None]


class PostgresCatalog:
    """A `Catalog` in a PostgreSQL database named by a `postgresql://` URL."""

    def __init__(self, dsn: str, *, durable: bool) -> None:
        self.dsn = dsn
        self._durable = durable
        self._pool: asyncpg.Pool | None = None
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.locks = AdvisoryHashLocks(dsn)
        self.commits = 0

    @property
    def makes_blobs_durable(self) -> bool:
        return False  # another machine's disk: its commits cannot cover the blobs' sync

    @postgres_errors("open the catalog")
    async def open(self) -> None:
        # With fsync=never the catalog may lose its last commits on a crash, like the blobs.
        server_settings = {"application_name": "rhinobox"}
        if not self._durable:
            server_settings["synchronous_commit"] = "off"
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=server_settings,
        )
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            await self.locks.open()
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._writer = asyncio.create_task(self._write_loop(), name="rhinobox-catalog-writer")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        while not self._queue.empty():  # queued behind the writer: answered, never left waiting
            _fail(self._queue.get_nowait(), StorageError("the catalog closed before this write ran"))
        await self.locks.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError("the catalog is not open")
        return self._pool

    @postgres_errors("reach the catalog")
    async def ping(self) -> None:
        await self._db().fetchval("SELECT 1")

    # -- writes ------------------------------------------------------------------------------

    @postgres_errors("record the uploads")
    async def record_uploads(self, records: Sequence[UploadRecord]) -> None:
        if not records:
            return
        if self._writer is None:
            raise StorageError("the catalog is not open")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Write(records, done))
        await done

    async def _write_loop(self) -> None:
        while True:
            group = [await self._queue.get()]
            while not self._queue.empty():
                group.append(self._queue.get_nowait())
            try:
                await self._write_group(group)
            except asyncio.CancelledError:  # close(): the group's unanswered writes may not have committed
                for write in group:
                    _fail(write, StorageError("the catalog closed before this write was confirmed"))
                raise

    async def _write_group(self, group: list[_Write]) -> None:
        """One transaction for the whole group; if it fails, each write is retried alone.

        A write's failure reaches its caller as the domain's error (postgres_errors): a full disk is a 507.
        """
        try:
            async with self._db().acquire() as conn, conn.transaction():
                await _record(conn, [record for write in group for record in write.records])
            self.commits += 1
        except Exception as exc:
            if len(group) > 1:
                for write in group:
                    await self._write_group([write])
                return
            _fail(group[0], postgres_errors.translated(exc, "record the uploads"))
            return
        for write in group:
            if not write.done.done():
                write.done.set_result(None)

    @postgres_errors("delete a blob's entry")
    async def delete_blob(self, digest: str) -> bool:
        async with self._db().acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM blobs WHERE hash = $1 RETURNING category, size, upload_count", digest
            )  # uploads and prefixes go with it (ON DELETE CASCADE)
            if row is None:
                return False
            size, count = int(row["size"]), int(row["upload_count"])
            await conn.execute(
                "UPDATE category_stats SET blobs = blobs - 1, bytes = bytes - $2, uploads = uploads - $3,"
                " upload_bytes = upload_bytes - $2 * $3 WHERE category = $1",
                row["category"],
                size,
                count,
            )
            await conn.execute("DELETE FROM category_stats WHERE category = $1 AND blobs <= 0", row["category"])
        return True

    # -- reads -------------------------------------------------------------------------------

    @postgres_errors("look up hashes in the catalog")
    async def known_digests(self, digests: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return set()
        rows = await self._db().fetch("SELECT hash FROM blobs WHERE hash = ANY($1::text[])", wanted)
        return {row["hash"] for row in rows}

    @postgres_errors("look up types in the catalog")
    async def known_mimes(self, digests: Iterable[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return {}
        rows = await self._db().fetch("SELECT hash, mime FROM blobs WHERE hash = ANY($1::text[])", wanted)
        return {row["hash"]: row["mime"] for row in rows}

    @postgres_errors.iteration("list the catalog's hashes")
    async def iter_digests(self, page_size: int = 1000) -> AsyncGenerator[list[str], None]:
        after = ""
        db = self._db()
        while True:
            rows = await db.fetch("SELECT hash FROM blobs WHERE hash > $1 ORDER BY hash LIMIT $2", after, page_size)
            if not rows:
                return
            page = [row["hash"] for row in rows]
            yield page
            after = page[-1]

    @postgres_errors("read a blob's entry")
    async def get_blob(self, digest: str) -> BlobInfo | None:
        row = await self._db().fetchrow(f"SELECT {_BLOB_COLUMNS} FROM blobs b WHERE b.hash = $1", digest)
        return BlobInfo(*row) if row is not None else None

    @postgres_errors("list a blob's uploads")
    async def list_uploads(self, digest: str, *, after: int | None = None, limit: int = 100) -> list[StoredUpload]:
        rows = await self._db().fetch(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE hash = $1 AND id > $2 ORDER BY id LIMIT $3",
            digest,
            after or 0,
            _clamp(limit),
        )
        return [StoredUpload(*row) for row in rows]

    @postgres_errors("list the catalog")
    async def list_blobs(self, query: BlobQuery, *, before: int | None = None, limit: int = 100) -> BlobPage:
        limit = _clamp(limit)
        if not query_can_match(query):
            return BlobPage([], None)
        if before is not None:
            before = min(before, MAX_ID)  # a cursor past any id lists from the newest
        sql, params = _listing_sql(query, before, limit + 1)
        rows = await self._db().fetch(sql, *params)
        blobs = [BlobInfo(*row) for row in rows[:limit]]
        return BlobPage(blobs, blobs[-1].id if len(rows) > limit else None)

    @postgres_errors("count the catalog")
    async def stats(self) -> CatalogStats:
        rows = await self._db().fetch(
            "SELECT category, blobs, bytes, uploads, upload_bytes FROM category_stats WHERE blobs > 0 ORDER BY category"
        )
        return CatalogStats(
            blobs=sum(int(row["blobs"]) for row in rows),
            bytes_stored=sum(int(row["bytes"]) for row in rows),
            uploads=sum(int(row["uploads"]) for row in rows),
            bytes_uploaded=sum(int(row["upload_bytes"]) for row in rows),
            by_category={
                row["category"]: CategoryStats(blobs=int(row["blobs"]), bytes=int(row["bytes"])) for row in rows
            },
        )


def _fail(write: _Write, error: BaseException) -> None:
    if not write.done.done():  # its caller may have been cancelled
        write.done.set_exception(error)


async def _record(conn: Connection, records: Sequence[UploadRecord]) -> None:
    """Blobs, their category prefixes, the totals, then the upload rows, in the caller's transaction."""
    blobs = _blob_rows(records)
    counts = {row[0]: row[6] for row in blobs}
    touched = await conn.fetch(_UPSERT_BLOBS, *(list(column) for column in zip(*blobs, strict=True)))
    ids = {row["hash"]: int(row["id"]) for row in touched}
    prefixes = sorted({(prefix, ids[r.digest]) for r in records for prefix in category_prefixes(r.category)})
    await conn.execute(_INSERT_PREFIXES, [p for p, _ in prefixes], [i for _, i in prefixes])
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in touched:
        size, count, totals = int(row["size"]), counts[row["hash"]], stats[row["category"]]
        if row["inserted"]:
            totals[0] += 1
            totals[1] += size
        totals[2] += count
        totals[3] += size * count
    ordered = sorted(stats.items())
    await conn.execute(_ADD_STATS, [c for c, _ in ordered], *([t[i] for _, t in ordered] for i in range(4)))
    uploads = [(r.digest, r.name, r.category, r.hint, r.comment, r.claimed_type, r.uploaded_at) for r in records]
    await conn.copy_records_to_table("uploads", records=uploads, columns=UPLOAD_COLUMNS)


def _blob_rows(records: Sequence[UploadRecord]) -> list[tuple[str, int, str, str, float, float, int]]:
    """One row per distinct digest (ON CONFLICT may touch a row once per statement), sorted by hash."""
    merged: dict[str, tuple[str, int, str, str, float, float, int]] = {}
    for r in records:
        seen = merged.get(r.digest)
        if seen is None:
            merged[r.digest] = (r.digest, r.size, r.mime, r.blob_category, r.uploaded_at, r.uploaded_at, 1)
        else:
            first, last = min(seen[4], r.uploaded_at), max(seen[5], r.uploaded_at)
            merged[r.digest] = (*seen[:4], first, last, seen[6] + 1)
    return [merged[digest] for digest in sorted(merged)]


def _clamp(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _listing_sql(query: BlobQuery, before: int | None, limit: int) -> tuple[str, list[object]]:
    """The listing query: a descending walk of an index on id (blobs, or one category prefix).

    Every filter is a condition checked on the way, as in the SQLite catalog; the name filter is
    case-insensitive (ILIKE). For a name of 3+ characters the planner may instead start from the
    trigram index on upload names (migration 2) and sort the few matches: it picks that when the
    name is rare, where the walk would read most blobs to fill a page.
    """
    where: list[str] = []
    params: list[object] = []

    def param(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    if query.category is not None:
        source, key = "blob_prefixes p JOIN blobs b ON b.id = p.blob_id", "p.blob_id"
        where.append(f"p.prefix = {param(query.category.strip('/'))}")
    else:
        source, key = "blobs b", "b.id"
    if before is not None:
        where.append(f"{key} < {param(before)}")
    if query.mime is not None:
        where.append(f"b.mime = {param(query.mime)}")
    if query.min_size is not None:
        where.append(f"b.size >= {param(query.min_size)}")
    if query.max_size is not None:
        where.append(f"b.size <= {param(query.max_size)}")
    if query.since is not None:
        where.append(f"b.first_upload_at >= {param(float(query.since))}")
    if query.until is not None:
        where.append(f"b.first_upload_at < {param(float(query.until))}")
    if query.name is not None:
        pattern = param(f"%{_like_escape(query.name)}%")
        where.append(f"EXISTS (SELECT 1 FROM uploads u WHERE u.hash = b.hash AND u.name ILIKE {pattern} ESCAPE '\\')")
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {_BLOB_COLUMNS}, {_FIRST_NAME} FROM {source} {condition} ORDER BY {key} DESC LIMIT {param(limit)}"
    return sql, params
