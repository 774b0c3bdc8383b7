"""SQLite catalog (WAL): writes on a writer thread fed by a queue (sqlite_writer), reads on aiosqlite.

Concurrent `record_uploads` calls are grouped: whatever is queued when the writer wakes goes into
one transaction, their records into one multi-row statement per table, so N concurrent single-file
requests cost one commit (one WAL fsync, or one shared filesystem sync) and a few statements, not N of each.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, TypeVar

import aiosqlite

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
from rhinobox.catalog.sqlite_errors import sqlite_errors
from rhinobox.catalog.sqlite_schema import NAME_BLOB_LIMIT, NAME_SLOTS, migrate
from rhinobox.catalog.sqlite_writer import MergeableJob, SQLiteWriter, WriteJob
from rhinobox.errors import StorageError

__all__ = ["SQLiteCatalog"]

CATALOG_FILENAME: Final = "catalog.sqlite3"
BUSY_TIMEOUT_MS: Final = 30_000
LOOKUP_CHUNK: Final = 500  # stays under SQLite's bound-parameter limit
# The most rows one multi-row INSERT carries (the bound-variable limit may cap it lower): each row
# count is its own statement in the connection's cache, and a huge one compiles slowly.
MAX_ROWS_PER_STATEMENT: Final = 1024
STATEMENT_CACHE: Final = 512  # the writer's prepared statements, several row counts of each insert
# The writer checkpoints this long after the first commit a checkpoint has not covered, at its next
# idle moment (SQLiteWriter): small checkpoints often. Less often with fsync=always, where commits wait
# behind each checkpoint's own fsyncs: every 50 ms raised that mode's p99 at 760 uploads a second from
# 18-25 ms to 24-31 ms; every 250 ms made no difference that stood out from the noise.
CHECKPOINT_SECONDS: Final = 0.05
CHECKPOINT_SECONDS_DURABLE: Final = 0.25
WAL_BACKSTOP_PAGES: Final = 20_000  # about 80 MiB of WAL
MAX_ID: Final = 2**63 - 1  # a cursor past any id lists from the newest (SQLite integers are 64-bit)
TRIGRAM: Final = 3  # shortest name the trigram index can search; shorter ones scan blobs newest first

T = TypeVar("T")

# Multi-row inserts: `{rows}` is the row marks repeated, one set per row. A new blob's first_upload_at
# is never earlier than an existing blob's (a clock step back is absorbed; _clamped_blob_rows works it
# out), so first_upload_at grows with id and a time window is an id range (see _id_bound).
_INSERT_BLOBS: Final = """
INSERT INTO blobs (hash, size, mime, category, first_upload_at, last_upload_at, upload_count) VALUES {rows}
ON CONFLICT(hash) DO UPDATE SET
    last_upload_at = max(last_upload_at, excluded.last_upload_at),
    upload_count = upload_count + 1
"""
_BLOB_MARKS: Final = "(?, ?, ?, ?, ?, ?, 1)"
_INSERT_UPLOADS: Final = (
    "INSERT INTO uploads (hash, name, category, hint, comment, claimed_type, uploaded_at) VALUES {rows}"
)
_UPLOAD_MARKS: Final = "(?, ?, ?, ?, ?, ?, ?)"
# CROSS JOIN keeps the rows outermost: one index seek into blobs per row, never a scan of blobs.
_INSERT_PREFIXES: Final = (
    "INSERT OR IGNORE INTO blob_prefixes (prefix, blob_id)"
    " SELECT v.column1, b.id FROM (VALUES {rows}) AS v CROSS JOIN blobs AS b WHERE b.hash = v.column2"
)
_PREFIX_MARKS: Final = "(?, ?)"
_BLOB_COLUMNS: Final = "b.id, b.hash, b.size, b.mime, b.category, b.first_upload_at, b.last_upload_at, b.upload_count"
_UPLOAD_COLUMNS: Final = "id, name, category, hint, comment, claimed_type, uploaded_at"
_FIRST_NAME: Final = "(SELECT u.name FROM uploads u WHERE u.hash = b.hash ORDER BY u.id LIMIT 1)"


class SQLiteCatalog:
    """A `Catalog` in one SQLite file under the data directory.

    Durable with `sync` (the blob store's filesystem sync, `BlobStore.sync_covering`): each group of
    writes commits without SQLite's own WAL fsync, then `sync` makes the rows and every blob renamed
    before them durable at once, so an upload waits for one sync, not two in a row. A power cut in
    between can leave a row whose blob's bytes did not land; the start-up check after an unclean stop
    drops such entries (rhinobox/reconcile.py).
    """

    def __init__(self, path: Path, *, durable: bool, sync: Callable[[], None] | None = None) -> None:
        self.path = path
        self._durable = durable
        self._sync = sync if durable else None
        self._synchronous = "FULL" if durable and sync is None else "NORMAL"
        self._writer: SQLiteWriter | None = None
        self._reader: aiosqlite.Connection | None = None

    @property
    def commits(self) -> int:
        """Write transactions committed since open (a group of concurrent writes is one)."""
        return self._writer.commits if self._writer is not None else 0

    @property
    def lock_wait_seconds(self) -> float:
        """Seconds the writer waited for the database's write lock since open (held by another process)."""
        return self._writer.lock_wait_seconds if self._writer is not None else 0.0

    @property
    def makes_blobs_durable(self) -> bool:
        return self._sync is not None

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, durable: bool, sync: Callable[[], None] | None = None) -> SQLiteCatalog:
        return cls(data_dir / CATALOG_FILENAME, durable=durable, sync=sync)

    @sqlite_errors("open the catalog")
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        setup = await self._connect()
        try:
            await setup.execute("PRAGMA journal_mode=WAL")
            await migrate(setup)  # before the writer thread starts: nothing else writes yet
        finally:
            await setup.close()
        try:
            self._writer = SQLiteWriter(
                self._connect_writer,
                name="rhinobox-catalog-writer",
                checkpoint_seconds=CHECKPOINT_SECONDS_DURABLE if self._durable else CHECKPOINT_SECONDS,
                sync=self._sync,
            )
            await self._writer.start()
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise

    def _connect_writer(self) -> sqlite3.Connection:
        """The write connection; opened on the writer thread, which alone uses it."""
        db = sqlite3.connect(self.path, isolation_level=None, cached_statements=STATEMENT_CACHE)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA journal_mode=WAL")
            # The writer checkpoints between groups (CHECKPOINT_SECONDS), not inside a commit: SQLite's
            # default of one every 1,000 pages stalls the committing request for the whole checkpoint.
            # This limit is only a backstop.
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            # A multi-row insert that fires triggers keeps a statement journal; past 64 KiB SQLite
            # spills it to a temp file it creates and deletes in the middle of the commit, on the
            # temp directory's filesystem (a file create on the write path: milliseconds on a busy
            # disk). In memory it is bounded by the pages one group of inserts touches.
            db.execute("PRAGMA temp_store=MEMORY")
            # From here the writer waits for another process's write lock itself, and counts the wait
            # (SQLiteWriter._begin); the setup above kept SQLite's busy timeout.
            db.execute("PRAGMA busy_timeout=0")
        except BaseException:
            db.close()
            raise
        return db

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await db.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")  # setup and reads
        except BaseException:
            await db.close()  # else its thread outlives the failed open and keeps the process from exiting
            raise
        return db

    async def close(self) -> None:
        if self._writer is not None:
            # Writes already queued commit (they were promised to callers); later ones are refused.
            await self._writer.close()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    @sqlite_errors("reach the catalog")
    async def ping(self) -> None:
        async with self._read().execute("SELECT 1") as cursor:
            await cursor.fetchone()

    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StorageError("the catalog is not open")
        return self._reader

    @sqlite_errors("write to the catalog")
    async def write(self, job: WriteJob[T]) -> T:
        """Run `job(connection)` on the writer thread inside its next group transaction; return its result."""
        return await self._writes().submit(job)

    def _writes(self) -> SQLiteWriter:
        if self._writer is None:
            raise StorageError("the catalog is not open")
        return self._writer

    @sqlite_errors("record the uploads")
    async def record_uploads(self, records: Sequence[UploadRecord]) -> None:
        if records:
            await self._writes().submit(_UploadRows(records))

    @sqlite_errors("look up hashes in the catalog")
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

    @sqlite_errors("look up types in the catalog")
    async def known_mimes(self, digests: Iterable[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(digests))
        found: dict[str, str] = {}
        db = self._read()
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            async with db.execute(f"SELECT hash, mime FROM blobs WHERE hash IN ({marks})", chunk) as cursor:
                found.update((row[0], row[1]) for row in await cursor.fetchall())
        return found

    @sqlite_errors.iteration("list the catalog's hashes")
    async def iter_digests(self, page_size: int = 1000) -> AsyncGenerator[list[str], None]:
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

    @sqlite_errors("read a blob's entry")
    async def get_blob(self, digest: str) -> BlobInfo | None:
        sql = f"SELECT {_BLOB_COLUMNS} FROM blobs b WHERE b.hash = ?"
        async with self._read().execute(sql, (digest,)) as cursor:
            row = await cursor.fetchone()
        return _blob(row) if row is not None else None

    @sqlite_errors("list a blob's uploads")
    async def list_uploads(self, digest: str, *, after: int | None = None, limit: int = 100) -> list[StoredUpload]:
        sql = f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE hash = ? AND id > ? ORDER BY id LIMIT ?"
        async with self._read().execute(sql, (digest, after or 0, _clamp(limit))) as cursor:
            rows = await cursor.fetchall()
        return [StoredUpload(*row) for row in rows]

    @sqlite_errors("list the catalog")
    async def list_blobs(self, query: BlobQuery, *, before: int | None = None, limit: int = 100) -> BlobPage:
        limit = _clamp(limit)
        if not query_can_match(query):
            return BlobPage([], None)
        low = await self._id_bound(query.since)
        if query.since is not None and low is None:
            return BlobPage([], None)  # nothing that new
        high = await self._id_bound(query.until)
        upper = min((b for b in (before, high) if b is not None), default=None)
        if upper is not None:
            upper = min(upper, MAX_ID)
        rows = await self._listing_rows(query, low, upper, limit + 1)
        blobs = [_blob(row) for row in rows[:limit]]
        return BlobPage(blobs, blobs[-1].id if len(rows) > limit else None)

    async def _listing_rows(
        self, query: BlobQuery, low: int | None, high: int | None, want: int
    ) -> list[Sequence[object]]:
        """Up to `want` distinct blobs, newest first. A name search yields a blob once per matching
        name (adjacent rows), so it reads on below the last blob until it has `want` distinct ones."""
        rows: list[Sequence[object]] = []
        while True:
            sql, params = _listing_sql(query, low, high, want)
            async with self._read().execute(sql, params) as cursor:
                fetched = list(await cursor.fetchall())
            rows.extend(row for row in fetched if not rows or row[0] != rows[-1][0])
            if len(rows) >= want or len(fetched) < want:
                return rows[:want]
            high = _blob(rows[-1]).id

    async def _id_bound(self, moment: float | None) -> int | None:
        """The id of the oldest blob first uploaded at or after `moment` (an index seek), or None."""
        if moment is None:
            return None
        sql = "SELECT id FROM blobs WHERE first_upload_at >= ? ORDER BY first_upload_at, id LIMIT 1"
        async with self._read().execute(sql, (moment,)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else None

    @sqlite_errors("count the catalog")
    async def stats(self) -> CatalogStats:
        sql = "SELECT category, blobs, bytes, uploads, upload_bytes FROM category_stats WHERE blobs > 0"
        async with self._read().execute(sql) as cursor:
            rows = await cursor.fetchall()
        return CatalogStats(
            blobs=sum(row[1] for row in rows),
            bytes_stored=sum(row[2] for row in rows),
            uploads=sum(row[3] for row in rows),
            bytes_uploaded=sum(row[4] for row in rows),
            by_category={row[0]: CategoryStats(blobs=row[1], bytes=row[2]) for row in sorted(rows)},
        )

    @sqlite_errors("delete a blob's entry")
    async def delete_blob(self, digest: str) -> bool:
        return await self.write(functools.partial(_delete_blob, digest=digest))


def _delete_blob(db: sqlite3.Connection, digest: str) -> bool:
    """The blob, its uploads and its category prefixes (a write job)."""
    row = db.execute("SELECT id, category FROM blobs WHERE hash = ?", (digest,)).fetchone()
    if row is None:
        return False
    blob_id, category = row
    filed = {category, *(r[0] for r in db.execute("SELECT DISTINCT category FROM uploads WHERE hash = ?", (digest,)))}
    prefixes = {prefix for name in filed for prefix in category_prefixes(name)}
    db.executemany("DELETE FROM blob_prefixes WHERE prefix = ? AND blob_id = ?", [(p, blob_id) for p in prefixes])
    db.execute("DELETE FROM uploads WHERE hash = ?", (digest,))
    db.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
    return True


def _clamp(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


def _blob(row: Sequence[object]) -> BlobInfo:
    return BlobInfo(*row)  # type: ignore[arg-type]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _listing_sql(query: BlobQuery, low: int | None, high: int | None, limit: int) -> tuple[str, list[object]]:
    """The listing query: a descending walk of an index on id (the blobs rowid, or a category prefix),
    within ids [low, high) (the cursor and the time window), newest first.

    Other filters are conditions checked on the way, so a page costs about `limit` rows read for
    filters that match a fair share of blobs, whatever the catalog's size. A name of 3 or more
    characters walks the name index instead (see `_name_search_sql`).
    """
    if query.name is not None and len(query.name) >= TRIGRAM:
        return _name_search_sql(query, query.name, low, high, limit)
    where: list[str] = []
    params: list[object] = []
    if query.category is not None:
        source = "blob_prefixes p JOIN blobs b ON b.id = p.blob_id"
        key = "p.blob_id"
        where.append("p.prefix = ?")
        params.append(query.category.strip("/"))
    else:
        source, key = "blobs b", "b.id"
    if low is not None:
        where.append(f"{key} >= ?")
        params.append(low)
    if high is not None:
        where.append(f"{key} < ?")
        params.append(high)
    _blob_conditions(query, where, params)
    if query.name is not None:
        where.append("EXISTS (SELECT 1 FROM uploads u WHERE u.hash = b.hash AND u.name LIKE ? ESCAPE '\\')")
        params.append(f"%{_like_escape(query.name)}%")
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {_BLOB_COLUMNS}, {_FIRST_NAME} FROM {source} {condition} ORDER BY {key} DESC LIMIT ?"
    params.append(limit)
    return sql, params


def _blob_conditions(query: BlobQuery, where: list[str], params: list[object]) -> None:
    """The filters checked on each blob row `b` reached (both listing paths)."""
    for value, clause in (
        (query.mime, "b.mime = ?"),
        (query.min_size, "b.size >= ?"),
        (query.max_size, "b.size <= ?"),
        (query.since, "b.first_upload_at >= ?"),
        (query.until, "b.first_upload_at < ?"),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)


def _name_search_sql(
    query: BlobQuery, name: str, low: int | None, high: int | None, limit: int
) -> tuple[str, list[object]]:
    """A descending walk of the blob_names matches of `name` (keys blob id * NAME_SLOTS + ordinal, so
    blob ids [low, high) are a key range), checking the other filters on each match's blob.

    The trigram index folds case beyond ASCII; the LIKE on the matched name keeps the result exactly
    the LIKE scan's (literal, ASCII case-insensitive), whichever path a query takes. A blob with
    several matching names comes once per name, on adjacent rows.
    """
    where = ["blob_names MATCH ?", "f.name LIKE ? ESCAPE '\\'"]
    params: list[object] = ['"' + name.replace('"', '""') + '"', f"%{_like_escape(name)}%"]
    # Blobs with ids from NAME_BLOB_LIMIT on are never recorded (the index refuses their names).
    if low is not None:
        where.append("f.rowid >= ?")
        params.append(min(low, NAME_BLOB_LIMIT - 1) * NAME_SLOTS)
    if high is not None and high < NAME_BLOB_LIMIT:
        where.append("f.rowid < ?")
        params.append(high * NAME_SLOTS)
    if query.category is not None:
        where.append("EXISTS (SELECT 1 FROM blob_prefixes p WHERE p.prefix = ? AND p.blob_id = b.id)")
        params.append(query.category.strip("/"))
    _blob_conditions(query, where, params)
    sql = (
        f"SELECT {_BLOB_COLUMNS}, {_FIRST_NAME} FROM blob_names f JOIN blobs b ON b.id = f.rowid / {NAME_SLOTS}"
        f" WHERE {' AND '.join(where)} ORDER BY f.rowid DESC LIMIT ?"
    )
    params.append(limit)
    return sql, params


class _UploadRows(MergeableJob):
    """The rows of one `record_uploads` call; the writer merges all queued ones into one set of statements."""

    __slots__ = ("blobs", "prefixes", "uploads")

    def __init__(self, records: Sequence[UploadRecord]) -> None:
        self.blobs = [(r.digest, r.size, r.mime, r.blob_category, r.uploaded_at) for r in records]
        self.uploads: list[tuple[object, ...]] = [
            (r.digest, r.name, r.category, r.hint, r.comment, r.claimed_type, r.uploaded_at) for r in records
        ]
        self.prefixes = [(prefix, r.digest) for r in records for prefix in category_prefixes(r.category)]

    @classmethod
    def run_merged(cls, db: sqlite3.Connection, jobs: Sequence[_UploadRows]) -> None:
        blobs = [row for job in jobs for row in job.blobs]
        uploads = [row for job in jobs for row in job.uploads]
        prefixes = list(dict.fromkeys(row for job in jobs for row in job.prefixes))
        limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        _insert_rows(db, _INSERT_BLOBS, _BLOB_MARKS, _clamped_blob_rows(db, blobs, limit), limit)
        _insert_rows(db, _INSERT_UPLOADS, _UPLOAD_MARKS, uploads, limit)
        _insert_rows(db, _INSERT_PREFIXES, _PREFIX_MARKS, prefixes, limit)


def _clamped_blob_rows(
    db: sqlite3.Connection, blobs: Sequence[tuple[str, int, str, str, float]], limit: int
) -> list[tuple[object, ...]]:
    """Each blob row with its upload time raised to the latest first_upload_at before it, as inserting
    the rows one at a time would: only a row that adds a new blob moves that latest time on.

    Also the time an existing blob's last_upload_at is compared with, as it always was.
    """
    known = _existing(db, [row[0] for row in blobs], limit)
    latest: float | None = db.execute("SELECT max(first_upload_at) FROM blobs").fetchone()[0]
    rows: list[tuple[object, ...]] = []
    for digest, size, mime, category, uploaded_at in blobs:
        at = uploaded_at if latest is None else max(uploaded_at, latest)
        rows.append((digest, size, mime, category, at, at))
        if digest not in known:
            known.add(digest)
            latest = at
    return rows


def _existing(db: sqlite3.Connection, digests: Sequence[str], limit: int) -> set[str]:
    wanted = list(dict.fromkeys(digests))
    found: set[str] = set()
    step = max(1, min(limit, MAX_ROWS_PER_STATEMENT))
    for start in range(0, len(wanted), step):
        chunk = wanted[start : start + step]
        marks = ",".join("?" * len(chunk))
        found.update(row[0] for row in db.execute(f"SELECT hash FROM blobs WHERE hash IN ({marks})", chunk))
    return found


def _insert_rows(
    db: sqlite3.Connection, template: str, marks: str, rows: Sequence[tuple[object, ...]], limit: int
) -> None:
    """Insert `rows` in as few statements as the bound-variable `limit` allows, in their order."""
    per_statement = max(1, min(limit // marks.count("?"), MAX_ROWS_PER_STATEMENT))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        db.execute(template.format(rows=",".join([marks] * len(chunk))), [value for row in chunk for value in row])
