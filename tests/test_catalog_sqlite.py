"""The SQLite catalog: the backend-neutral contract, plus what is particular to SQLite (migration, plans)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from rhinobox.catalog.base import BlobQuery
from rhinobox.catalog.sqlite import WAL_BACKSTOP_PAGES, SQLiteCatalog, _listing_sql
from rhinobox.catalog.sqlite_schema import MIGRATIONS
from tests.catalog_contract import *  # noqa: F403 - the contract's tests run against this backend
from tests.catalog_contract import T0, digest, upload


@pytest.fixture
def catalog(sqlite_catalog: SQLiteCatalog) -> SQLiteCatalog:
    return sqlite_catalog


async def test_migration_2_keeps_and_indexes_existing_rows(tmp_path: Path) -> None:
    """A catalog written before migration 2 keeps its rows, ids, prefixes and stats after it."""
    path = tmp_path / "old.sqlite3"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, applied_at REAL)")
        await db.executescript(f"BEGIN;{MIGRATIONS[1]}INSERT INTO schema_migrations VALUES (1, 0);COMMIT;")
        await db.execute(
            "INSERT INTO blobs (id, hash, size, mime, category, first_upload_at, last_upload_at, upload_count)"
            " VALUES (7, ?, 10, 'image/png', 'images/png', ?, ?, 2)",
            (digest(1), T0, T0 + 1),
        )
        await db.executemany(
            "INSERT INTO uploads (hash, name, category, uploaded_at) VALUES (?, ?, ?, ?)",
            [(digest(1), "a.png", "images/png", T0), (digest(1), "b.png", "images/png/trip/day1", T0 + 1)],
        )
    catalog = SQLiteCatalog(path, durable=False)
    await catalog.open()
    try:
        blob = await catalog.get_blob(digest(1))
        assert blob is not None
        assert (blob.id, blob.upload_count) == (7, 2)
        page = await catalog.list_blobs(BlobQuery(category="images/png/trip"))
        assert [b.digest for b in page.blobs] == [digest(1)]
        stats = await catalog.stats()
        assert (stats.blobs, stats.bytes_stored, stats.uploads, stats.bytes_saved) == (1, 10, 2, 10)
        await catalog.record_uploads([upload(2)])
        newer = await catalog.get_blob(digest(2))
        assert newer is not None
        assert newer.id > 7
    finally:
        await catalog.close()


@pytest.mark.parametrize(
    "query",
    [
        BlobQuery(),
        BlobQuery(category="images"),
        BlobQuery(category="images/png", min_size=10),
        BlobQuery(mime="image/png"),
        BlobQuery(name="holiday"),
        BlobQuery(min_size=1, max_size=10),
    ],
)
async def test_listing_walks_an_index_in_order(catalog: SQLiteCatalog, query: BlobQuery) -> None:
    """No listing sorts its matches: each reads an index in id order and stops at `limit`."""
    await catalog.record_uploads([upload(n) for n in range(50)])
    sql, params = _listing_sql(query, 1, 10**9, 101)
    db = catalog._read()
    async with db.execute(f"EXPLAIN QUERY PLAN {sql}", params) as cursor:
        plan = " | ".join(str(row[-1]) for row in await cursor.fetchall())
    assert "TEMP B-TREE" not in plan, plan


async def test_first_upload_times_never_go_back(catalog: SQLiteCatalog) -> None:
    """A clock step back is absorbed, so first_upload_at grows with id and a time window is an id range."""
    for n, t in enumerate([10, 20, 15, 30, 5]):
        await catalog.record_uploads([upload(n, at=T0 + t)])
    page = await catalog.list_blobs(BlobQuery(), limit=10)
    oldest_first = list(reversed(page.blobs))
    assert [b.first_upload_at - T0 for b in oldest_first] == [10, 20, 20, 30, 30]
    assert all(b.last_upload_at >= b.first_upload_at for b in oldest_first)


async def test_migration_4_indexes_existing_names(tmp_path: Path) -> None:
    """Names recorded before the name index existed are found through it, once per blob, in order."""
    path = tmp_path / "old.sqlite3"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, applied_at REAL)")
        for number in (1, 2, 3):
            await db.executescript(
                f"BEGIN;{MIGRATIONS[number]}INSERT INTO schema_migrations VALUES ({number}, 0);COMMIT;"
            )
        for n, names in enumerate([["Needle.png", "needle copy.png", "Needle.png"], ["other.png"], ["a needle"]]):
            await db.execute(
                "INSERT INTO blobs (hash, size, mime, category, first_upload_at, last_upload_at, upload_count)"
                " VALUES (?, 10, 'image/png', 'images/png', ?, ?, ?)",
                (digest(n), T0 + n, T0 + n, len(names)),
            )
            await db.executemany(
                "INSERT INTO uploads (hash, name, category, uploaded_at) VALUES (?, ?, 'images/png', ?)",
                [(digest(n), name, T0 + n) for name in names],
            )
    catalog = SQLiteCatalog(path, durable=False)
    await catalog.open()
    try:
        page = await catalog.list_blobs(BlobQuery(name="NEEDLE"), limit=1)
        assert [b.digest for b in page.blobs] == [digest(2)]
        rest = await catalog.list_blobs(BlobQuery(name="NEEDLE"), before=page.next_before, limit=1)
        assert ([b.digest for b in rest.blobs], rest.next_before) == ([digest(0)], None)
        async with catalog._read().execute("SELECT count(*) FROM blob_names") as cursor:
            assert await cursor.fetchone() == (4,)  # distinct names per blob
        await catalog.record_uploads([upload(1, name="needle late.png")])
        assert await catalog.delete_blob(digest(0))
        found = await catalog.list_blobs(BlobQuery(name="needle"), limit=10)
        assert [b.digest for b in found.blobs] == [digest(2), digest(1)]
    finally:
        await catalog.close()


def _rows_in_database_file(path: Path) -> int | None:
    """Rows a checkpoint has copied into the main file so far, or None while one is copying pages.

    immutable=1 reads the main file alone, ignoring the WAL and the locks, so a read that meets a
    checkpoint half way sees a torn file: that is "not yet", not a failure of the catalog.
    """
    try:
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM uploads").fetchone()[0])
    except sqlite3.DatabaseError:
        return None


def _wal_salt(path: Path) -> bytes:
    """The WAL header's salts: SQLite changes them each time it starts the WAL over from its beginning."""
    with open(f"{path}-wal", "rb") as wal:
        return wal.read(32)[16:24]


async def test_commits_leave_the_checkpoint_to_an_idle_moment(tmp_path: Path) -> None:
    """A commit does not checkpoint; the writer folds the WAL into the database file once idle."""
    path = tmp_path / "c.sqlite3"
    catalog = SQLiteCatalog(path, durable=False)
    await catalog.open()
    try:
        await catalog.record_uploads([upload(n, name=f"n{n}.png") for n in range(500)])
        assert catalog._writer is not None
        checkpoints = catalog._writer.checkpoints
        in_file = await catalog.write(lambda db: _rows_in_database_file(path))
        if catalog._writer.checkpoints == checkpoints:  # no idle moment came between the two writes
            assert in_file is not None
            assert in_file < 500  # so the commit itself did not checkpoint
        copied = None
        for _ in range(40):
            await asyncio.sleep(0.05)
            copied = _rows_in_database_file(path)
            if copied == 500:
                break
        assert copied == 500
    finally:
        await catalog.close()


async def test_the_wal_starts_over_under_a_steady_stream_of_writes(tmp_path: Path) -> None:
    """With writes always queued, checkpoints still run and the WAL is reused, not grown.

    A checkpoint on another connection never copies every frame while commits keep coming, and only
    then does SQLite start the WAL over; the writer's own checkpoints, between groups, do.
    """
    path = tmp_path / "c.sqlite3"
    catalog = SQLiteCatalog(path, durable=False)
    await catalog.open()
    salts: set[bytes] = set()
    wal_bytes: list[int] = []
    stop = asyncio.Event()

    async def writer(lane: int) -> None:
        n = 0
        while not stop.is_set():
            await catalog.record_uploads([upload(lane * 1_000_000 + n, name=f"f{lane}-{n}.png")])
            n += 1

    try:
        writers = [asyncio.create_task(writer(lane)) for lane in range(8)]
        for _ in range(60):  # 1.5 s of commits, never idle
            await asyncio.sleep(0.025)
            salts.add(_wal_salt(path))
            wal_bytes.append((tmp_path / "c.sqlite3-wal").stat().st_size)
        stop.set()
        await asyncio.gather(*writers)
        wal_mib = max(wal_bytes) / 2**20
        backstop_mib = WAL_BACKSTOP_PAGES * 4096 / 2**20  # SQLite's default page size; frame headers left out
        # Every 50 ms idle or 200 ms busy: about 25 here, the WAL at 11-25 MiB (44 and 67 once each, while
        # the machine was busy with other jobs: its size follows the write rate and stalls, so the bound
        # is the backstop itself). A checkpoint on another connection once a second left 3-4 restarts,
        # with the WAL at the backstop: the restart count is what tells the two apart.
        assert len(salts) >= 8, f"the WAL started over {len(salts) - 1} time(s) in 1.5 s; it reached {wal_mib:.0f} MiB"
        assert wal_mib < backstop_mib, f"the WAL grew to {wal_mib:.0f} MiB, towards the {backstop_mib:.0f} MiB backstop"
    finally:
        await catalog.close()


async def test_writer_keeps_statement_journals_in_memory(tmp_path: Path) -> None:
    """The writer's statement journals never become temp files created and deleted mid-commit."""
    catalog = SQLiteCatalog(tmp_path / "c.sqlite3", durable=False)
    await catalog.open()
    try:
        temp_store = await catalog.write(lambda db: db.execute("PRAGMA temp_store").fetchone()[0])
        assert temp_store == 2  # MEMORY
    finally:
        await catalog.close()
