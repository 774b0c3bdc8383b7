"""The SQLite catalog's writer thread: grouping, failures within a group, closing, and the multi-row inserts."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rhinobox.catalog.base import UploadRecord, category_prefixes
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.catalog.sqlite_writer import SQLiteWriter
from rhinobox.errors import StorageError
from tests.catalog_contract import T0, digest, upload
from tests.helpers import wait_until

HANG_GUARD_S = 10.0  # a bound on waits that should end at once, so a bug fails a test instead of hanging it

# The per-row statements the catalog used before the writer thread: the reference for the multi-row ones.
OLD_INSERT_BLOB = """
INSERT INTO blobs (hash, size, mime, category, first_upload_at, last_upload_at, upload_count)
SELECT ?1, ?2, ?3, ?4, t, t, 1 FROM (SELECT max(?5, ifnull((SELECT max(first_upload_at) FROM blobs), ?5)) AS t)
WHERE true
ON CONFLICT(hash) DO UPDATE SET
    last_upload_at = max(last_upload_at, excluded.last_upload_at),
    upload_count = upload_count + 1
"""
OLD_INSERT_UPLOAD = """
INSERT INTO uploads (hash, name, category, hint, comment, claimed_type, uploaded_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
OLD_INSERT_PREFIX = "INSERT OR IGNORE INTO blob_prefixes (prefix, blob_id) SELECT ?, id FROM blobs WHERE hash = ?"
TABLES = ("blobs", "uploads", "blob_prefixes", "category_stats", "blob_names")


@pytest.fixture
def catalog(sqlite_catalog: SQLiteCatalog) -> SQLiteCatalog:
    return sqlite_catalog


class Gate:
    """A write job that holds the writer thread until `release`: writes queued meanwhile form one group."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, db: sqlite3.Connection) -> str:
        self.entered.set()
        if not self.release.wait(HANG_GUARD_S):
            raise TimeoutError("the gate was never released")
        return "gate"


async def until(condition: Callable[[], bool]) -> None:
    assert await wait_until(condition, HANG_GUARD_S, interval=0.001), "the condition never came true"


async def hold_writer(catalog: SQLiteCatalog) -> tuple[Gate, asyncio.Task[str]]:
    gate = Gate()
    task = asyncio.create_task(catalog.write(gate))
    await until(gate.entered.is_set)
    return gate, task


def writer_of(catalog: SQLiteCatalog) -> SQLiteWriter:
    assert catalog._writer is not None
    return catalog._writer


async def queue_behind(catalog: SQLiteCatalog, *calls: Any) -> list[asyncio.Task[Any]]:
    """Start `calls` (coroutines) and wait until each has queued its write."""
    before = writer_of(catalog).queued
    tasks = [asyncio.create_task(call) for call in calls]
    await until(lambda: writer_of(catalog).queued >= before + len(tasks))
    return tasks


def table_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {
            table: db.execute(
                f"SELECT {'rowid, ' if table == 'blob_names' else ''}* FROM {table} ORDER BY 1, 2"
            ).fetchall()
            for table in TABLES
        }


def record_the_old_way(path: Path, group: Sequence[Sequence[UploadRecord]]) -> None:
    """One group as the aiosqlite writer recorded it: each table's rows one at a time, in one transaction."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        records = [record for call in group for record in call]
        db.executemany(OLD_INSERT_BLOB, [(r.digest, r.size, r.mime, r.blob_category, r.uploaded_at) for r in records])
        db.executemany(
            OLD_INSERT_UPLOAD,
            [(r.digest, r.name, r.category, r.hint, r.comment, r.claimed_type, r.uploaded_at) for r in records],
        )
        prefixes = dict.fromkeys((p, r.digest) for r in records for p in category_prefixes(r.category))
        db.executemany(OLD_INSERT_PREFIX, list(prefixes))
        db.execute("COMMIT")


# -- grouping --------------------------------------------------------------------------------------


async def test_concurrent_records_share_one_commit_and_one_answer(
    catalog: SQLiteCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 single-record calls queued together: one commit, one hop back to the loop, every row there."""
    loop = asyncio.get_running_loop()
    hops: list[object] = []
    original = loop.call_soon_threadsafe

    def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(callback)
        return original(callback, *args, **kwargs)

    gate, held = await hold_writer(catalog)
    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    commits = catalog.commits
    tasks = await queue_behind(catalog, *(catalog.record_uploads([upload(n)]) for n in range(200)))
    gate.release.set()
    assert await held == "gate"
    await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S)
    assert catalog.commits - commits == 2  # the gate's group, then all 200
    assert len(hops) == 2
    assert await catalog.known_digests(digest(n) for n in range(200)) == {digest(n) for n in range(200)}
    stats = await catalog.stats()
    assert (stats.blobs, stats.uploads) == (200, 200)


async def test_writes_of_one_loop_turn_wake_the_thread_once(
    catalog: SQLiteCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 writes submitted in one turn of the loop reach the idle thread with a single wake-up."""
    writer = writer_of(catalog)
    wakes = 0
    notify = writer._wake.notify

    def counted(n: int = 1) -> None:
        nonlocal wakes
        wakes += 1
        notify(n)

    monkeypatch.setattr(writer._wake, "notify", counted)
    commits = catalog.commits
    await asyncio.wait_for(asyncio.gather(*(catalog.record_uploads([upload(n)]) for n in range(50))), HANG_GUARD_S)
    assert wakes == 1
    assert catalog.commits - commits == 1
    assert (await catalog.stats()).uploads == 50


async def test_many_concurrent_calls_all_land(catalog: SQLiteCatalog) -> None:
    """Without holding the writer (groups as they come): 2,000 calls, 32 at a time, every one recorded."""
    for start in range(0, 2000, 32):
        await asyncio.gather(*(catalog.record_uploads([upload(n % 1500)]) for n in range(start, start + 32)))
    stats = await catalog.stats()
    assert (stats.blobs, stats.uploads) == (1500, 2016)


async def test_same_rows_as_inserting_one_at_a_time(tmp_path: Path) -> None:
    """The merged multi-row statements leave exactly the rows the old per-row statements left:
    first_upload_at clamped to the latest before it (moved on only by new blobs), repeats within a
    group counted, last_upload_at, prefixes, stats and the name index alike."""
    groups: list[list[list[UploadRecord]]] = [
        [[upload(1, at=T0 + 10), upload(2, at=T0 + 5, category="images/png/trip")], [upload(3, at=T0 + 7)]],
        [
            [upload(1, at=T0 + 1, name="again.png", hint="holiday")],
            [upload(4, at=T0 + 3), upload(4, at=T0 + 2, name="twice.png")],
            [upload(5, at=T0 + 100, category="docs/pdf", mime="application/pdf")],
            [upload(2, at=T0 + 50, name="late.png")],  # an existing blob after a newer new one
            [upload(6, at=T0 + 20)],
        ],
        [[upload(7, at=T0 - 5)], [upload(5, at=T0 + 200), upload(8, at=T0 + 150, hint="x")]],
    ]
    old, new = tmp_path / "old.sqlite3", tmp_path / "new.sqlite3"
    for path in (old, new):  # the same migrated, empty database
        empty = SQLiteCatalog(path, durable=False)
        await empty.open()
        await empty.close()
    for group in groups:
        record_the_old_way(old, group)

    catalog = SQLiteCatalog(new, durable=False)
    await catalog.open()
    try:
        for group in groups:
            gate, held = await hold_writer(catalog)
            commits = catalog.commits
            tasks = []
            for call in group:  # queued in order, so merged in order
                tasks += await queue_behind(catalog, catalog.record_uploads(call))
            gate.release.set()
            await held
            await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S)
            assert catalog.commits - commits == 2  # the group was one transaction
    finally:
        await catalog.close()
    expected, got = table_rows(old), table_rows(new)
    assert len(expected["blobs"]) == 8
    for table in TABLES:
        assert got[table] == expected[table], table


@pytest.mark.parametrize("variable_limit", [None, 999])
async def test_a_call_larger_than_the_variable_limit_is_split(tmp_path: Path, variable_limit: int | None) -> None:
    """20,000 records in one call: split into statements SQLite accepts (it refuses any over its limit)."""

    class Limited(SQLiteCatalog):
        def _connect_writer(self) -> sqlite3.Connection:
            db = super()._connect_writer()
            if variable_limit is not None:
                db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variable_limit)
            return db

    catalog = Limited(tmp_path / "catalog.sqlite3", durable=False)
    await catalog.open()
    try:
        records = [upload(n % 15_000, name=f"n{n}.png", hint=f"h{n % 7}") for n in range(20_000)]
        await catalog.record_uploads(records)
        stats = await catalog.stats()
        assert (stats.blobs, stats.uploads) == (15_000, 20_000)
        blob = await catalog.get_blob(digest(14_999))
        assert blob is not None
        assert blob.upload_count == 1
        twice = await catalog.get_blob(digest(4_999))
        assert twice is not None
        assert twice.upload_count == 2
        rows = table_rows(catalog.path)
        # Each blob under images, images/png and images/png/h<k> for each hint it came with.
        expected = {(p, r.digest) for r in records for p in category_prefixes(r.category)}
        assert len(rows["blob_prefixes"]) == len(expected)
    finally:
        await catalog.close()


# -- failures within a group -----------------------------------------------------------------------


def failing_job(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO uploads (hash, name, category, uploaded_at) VALUES ('x', 'bad.png', 'images', 0)")
    raise ValueError("this job fails")


async def test_a_failing_job_fails_alone(catalog: SQLiteCatalog) -> None:
    """One job raising and one record SQLite refuses, in a group: the rest commit, each failure goes to its caller."""
    # uploads.name is NOT NULL: a record ill-typed on purpose, so that SQLite itself refuses it.
    refused = replace(upload(3), name=None)  # type: ignore[arg-type]
    gate, held = await hold_writer(catalog)
    commits = catalog.commits
    good_1, bad_job, bad_record, good_2 = await queue_behind(
        catalog,
        catalog.record_uploads([upload(1)]),
        catalog.write(failing_job),
        catalog.record_uploads([refused]),
        catalog.record_uploads([upload(2), upload(1, name="again.png")]),
    )
    gate.release.set()
    await held
    done, _ = await asyncio.wait([good_1, bad_job, bad_record, good_2], timeout=HANG_GUARD_S)
    assert len(done) == 4
    assert good_1.result() is None
    assert good_2.result() is None
    assert isinstance(bad_job.exception(), ValueError)
    refusal = bad_record.exception()
    assert isinstance(refusal, StorageError)  # the backend's driver error, as the domain's
    assert "NOT NULL" in refusal.message
    assert catalog.commits - commits == 3  # the gate; then, the group having failed, each good call alone
    stats = await catalog.stats()
    assert (stats.blobs, stats.uploads) == (2, 3)
    assert await catalog.get_blob(digest(3)) is None  # nothing half-recorded
    assert await catalog.list_uploads("x") == []


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), StopIteration()])
async def test_a_job_raising_any_exception_leaves_the_thread_running(
    catalog: SQLiteCatalog, exc: BaseException
) -> None:
    def job(db: sqlite3.Connection) -> None:
        raise exc

    with pytest.raises(RuntimeError, match="catalog write job raised") as raised:
        await asyncio.wait_for(catalog.write(job), HANG_GUARD_S)
    assert raised.value.__cause__ is exc
    await asyncio.wait_for(catalog.record_uploads([upload(1)]), HANG_GUARD_S)
    assert await catalog.get_blob(digest(1)) is not None


async def test_an_answer_for_a_closed_loop_is_dropped(catalog: SQLiteCatalog) -> None:
    """A caller's event loop that closed before its write finished does not stop the writer."""
    gate = Gate()

    def submit_from_a_loop_that_closes() -> None:
        async def submit_and_leave() -> None:
            asyncio.create_task(catalog.write(gate))  # noqa: RUF006 - abandoned on purpose
            await until(gate.entered.is_set)

        asyncio.run(submit_and_leave())

    await asyncio.to_thread(submit_from_a_loop_that_closes)
    queued = await queue_behind(catalog, catalog.record_uploads([upload(1)]))
    gate.release.set()
    await asyncio.wait_for(queued[0], HANG_GUARD_S)
    await asyncio.wait_for(catalog.record_uploads([upload(2)]), HANG_GUARD_S)
    assert await catalog.known_digests([digest(1), digest(2)]) == {digest(1), digest(2)}


async def test_a_job_returning_a_coroutine_fails(catalog: SQLiteCatalog) -> None:
    """An async job the writer cannot tell from a plain one (a callable object) fails instead of doing nothing."""

    class AsyncCallable:
        async def __call__(self, db: Any) -> None:
            await db.execute("INSERT INTO uploads (hash, name, category, uploaded_at) VALUES ('x', 'x', 'x', 0)")

    with pytest.raises(TypeError, match="returned a coroutine"):
        _ = await asyncio.wait_for(catalog.write(AsyncCallable()), HANG_GUARD_S)  # typed as a coroutine; refused


# -- closing ---------------------------------------------------------------------------------------


async def test_close_answers_every_queued_write(tmp_path: Path) -> None:
    """Writes queued when close begins all commit; one submitted during close fails at once."""
    path = tmp_path / "catalog.sqlite3"
    catalog = SQLiteCatalog(path, durable=True)
    await catalog.open()
    gate, held = await hold_writer(catalog)
    queued = await queue_behind(catalog, *(catalog.record_uploads([upload(n)]) for n in range(50)))
    closing = asyncio.create_task(catalog.close())
    await asyncio.sleep(0)  # close has begun: the writer takes nothing new
    with pytest.raises(StorageError, match="closed"):
        await asyncio.wait_for(catalog.record_uploads([upload(99)]), HANG_GUARD_S)
    gate.release.set()
    await asyncio.wait_for(closing, HANG_GUARD_S)
    assert all(task.done() and task.exception() is None for task in queued)
    assert await held == "gate"

    reopened = SQLiteCatalog(path, durable=True)
    await reopened.open()
    try:
        stats = await reopened.stats()
        assert (stats.blobs, stats.uploads) == (50, 50)
    finally:
        await reopened.close()


async def test_writes_after_close_fail_fast(tmp_path: Path) -> None:
    catalog = SQLiteCatalog(tmp_path / "catalog.sqlite3", durable=False)
    await catalog.open()
    await catalog.close()
    with pytest.raises(StorageError, match="closed"):
        await asyncio.wait_for(catalog.record_uploads([upload(1)]), HANG_GUARD_S)
    with pytest.raises(StorageError, match="closed"):
        await asyncio.wait_for(catalog.delete_blob(digest(1)), HANG_GUARD_S)
    with pytest.raises(StorageError, match="not open"):
        await SQLiteCatalog(tmp_path / "other.sqlite3", durable=False).record_uploads([upload(1)])
    await catalog.close()  # twice is fine


def connect_to(path: Path) -> Callable[[], sqlite3.Connection]:
    return lambda: sqlite3.connect(path, isolation_level=None)


async def test_close_interrupts_a_statement_that_will_not_finish(tmp_path: Path) -> None:
    """Past the drain time, close fails what is unanswered and interrupts the running statement."""
    writer = SQLiteWriter(connect_to(tmp_path / "w.sqlite3"))
    await writer.start()
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    started = threading.Event()

    def never_ends(db: sqlite3.Connection) -> object:
        started.set()
        return db.execute(endless).fetchone()

    running = asyncio.create_task(writer.submit(never_ends))
    await until(started.is_set)
    behind = asyncio.create_task(writer.submit(lambda db: 1))
    await until(lambda: writer.queued == 1)
    await asyncio.wait_for(writer.close(drain_seconds=0.05), HANG_GUARD_S)
    for task in (running, behind):
        with pytest.raises(StorageError, match="closed before"):
            await asyncio.wait_for(task, HANG_GUARD_S)
    assert writer._thread is not None
    assert not writer._thread.is_alive()


async def test_close_fails_writes_behind_a_job_that_will_not_finish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job stuck outside SQLite cannot be interrupted: its caller and those behind it still get answers."""
    writer = SQLiteWriter(connect_to(tmp_path / "w.sqlite3"))
    await writer.start()
    gate = Gate()
    stuck = asyncio.create_task(writer.submit(gate))
    await until(gate.entered.is_set)
    behind = asyncio.create_task(writer.submit(lambda db: 1))
    await until(lambda: writer.queued == 1)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(writer.close(drain_seconds=0.05), HANG_GUARD_S)
    for task in (stuck, behind):
        with pytest.raises(StorageError, match="closed before"):
            await asyncio.wait_for(task, HANG_GUARD_S)
    assert "did not stop" in caplog.text
    gate.release.set()  # the job ends; the thread sees it is closing and stops
    assert writer._thread is not None
    await asyncio.to_thread(writer._thread.join, HANG_GUARD_S)
    assert not writer._thread.is_alive()


async def test_a_connection_that_cannot_open_fails_start(tmp_path: Path) -> None:
    def refuse() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    writer = SQLiteWriter(refuse)
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await writer.start()
    with pytest.raises(StorageError):
        await writer.submit(lambda db: 1)
    await asyncio.wait_for(writer.close(), HANG_GUARD_S)


async def test_a_fault_in_the_thread_answers_everyone_and_refuses_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the thread's own loop ever fail, queued callers get an error and new ones are refused."""
    writer = SQLiteWriter(connect_to(tmp_path / "w.sqlite3"))

    def broken_next_group(db: sqlite3.Connection) -> None:
        with writer._wake:
            while not writer._pending:
                writer._wake.wait()
        raise RuntimeError("a fault in the writer itself")

    monkeypatch.setattr(writer, "_next_group", broken_next_group)
    await writer.start()
    with pytest.raises(StorageError, match="stopped"):
        await asyncio.wait_for(writer.submit(lambda db: 1), HANG_GUARD_S)
    with pytest.raises(StorageError, match="closed"):
        await writer.submit(lambda db: 1)
    await asyncio.wait_for(writer.close(), HANG_GUARD_S)


async def test_a_write_failed_by_close_is_never_committed(tmp_path: Path) -> None:
    """Past the drain time close answers "closed before this write was confirmed"; the write must then not land.

    The interrupt only hits a running SQLite statement: a group busy outside one (a slow job, or BEGIN
    IMMEDIATE sleeping in the busy handler behind another process) carries on and COMMITs afterwards.
    """
    path = tmp_path / "w.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as setup:
        setup.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        setup.commit()
    writer = SQLiteWriter(lambda: sqlite3.connect(path, isolation_level=None))
    await writer.start()
    entered, release = threading.Event(), threading.Event()

    def slow_then_insert(db: sqlite3.Connection) -> str:
        entered.set()
        release.wait(HANG_GUARD_S)  # busy outside any statement: interrupt() cannot reach it
        db.execute("INSERT INTO t VALUES (1)")
        return "done"

    task = asyncio.create_task(writer.submit(slow_then_insert))
    await asyncio.to_thread(entered.wait, HANG_GUARD_S)
    closing = asyncio.create_task(writer.close(drain_seconds=0.05))
    with pytest.raises(StorageError, match="closed before"):
        await asyncio.wait_for(task, HANG_GUARD_S)  # the caller is told its write did not happen
    release.set()
    await asyncio.wait_for(closing, HANG_GUARD_S)
    assert writer._thread is not None
    await asyncio.to_thread(writer._thread.join, HANG_GUARD_S)
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT k FROM t").fetchall()
    assert rows == [], "a write its caller was told had failed was committed"


async def checkpointing_writer(tmp_path: Path) -> tuple[Path, SQLiteWriter]:
    """A started writer on a WAL database with a table `t`, checkpointing 20 ms after a commit."""
    path = tmp_path / "w.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        setup.commit()
    writer = SQLiteWriter(connect_to(path), checkpoint_seconds=0.02)
    await writer.start()
    return path, writer


async def test_a_writer_that_is_never_idle_still_checkpoints(tmp_path: Path) -> None:
    """Checkpoints wait for an idle moment, but not forever: an overdue one runs between two groups."""
    _, writer = await checkpointing_writer(tmp_path)
    loop = asyncio.get_running_loop()

    def insert(db: sqlite3.Connection, k: int, started: asyncio.Event) -> None:
        loop.call_soon_threadsafe(started.set)  # the next write is queued while this one runs
        db.execute("INSERT INTO t VALUES (?)", (k,))
        time.sleep(0.01)

    try:
        writes = []
        for k in range(40):  # 400 ms of writes, each queued before the one ahead of it ends
            started = asyncio.Event()
            writes.append(asyncio.ensure_future(writer.submit(functools.partial(insert, k=k, started=started))))
            await asyncio.wait_for(started.wait(), HANG_GUARD_S)
        await asyncio.wait_for(asyncio.gather(*writes), HANG_GUARD_S)
        assert writer.checkpoints >= 2  # one every 80 ms or so: it never found the queue empty
    finally:
        await writer.close()


async def test_a_checkpoint_held_short_by_a_reader_is_tried_again(tmp_path: Path) -> None:
    """A reader's older snapshot stops a checkpoint part way; the writer tries again while idle."""
    path, writer = await checkpointing_writer(tmp_path)

    def rows_in_database_file() -> int | None:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
                return int(db.execute("SELECT count(*) FROM t").fetchone()[0])
        except sqlite3.DatabaseError:  # met a checkpoint half way
            return None

    reader = sqlite3.connect(path, isolation_level=None)
    try:
        await writer.submit(lambda db: db.execute("INSERT INTO t VALUES (1)"))
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)  # a snapshot of one row
        await writer.submit(lambda db: db.execute("INSERT INTO t VALUES (2)"))
        checkpoints = writer.checkpoints
        for _ in range(200):
            if writer.checkpoints > checkpoints:
                break
            await asyncio.sleep(0.01)
        assert writer.checkpoints > checkpoints  # it ran, and could copy the first row only
        reader.execute("COMMIT")
        copied = None
        for _ in range(100):  # no more writes: only a retry can copy the second row
            await asyncio.sleep(0.01)
            copied = rows_in_database_file()
            if copied == 2:
                break
        assert copied == 2
    finally:
        reader.close()
        await writer.close()


async def test_a_failed_shared_sync_fails_its_group_once_and_every_later_write(
    tmp_path: Path,
) -> None:
    """A failed sync gives each write of its group a storage error, without running any again alone."""
    synced_commits: list[int] = []
    failures = [OSError(5, "Input/output error")]
    catalog: SQLiteCatalog | None = None

    def sync() -> None:
        assert catalog is not None
        synced_commits.append(catalog.commits)
        if failures:
            raise failures.pop()

    catalog = SQLiteCatalog(tmp_path / "catalog.sqlite3", durable=True, sync=sync)
    await catalog.open()
    try:
        assert catalog.makes_blobs_durable
        results = await asyncio.gather(*(catalog.record_uploads([upload(i)]) for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, StorageError) and "make the catalog write durable" in str(r) for r in results)
        assert synced_commits == [1]  # one group, one sync, no write run again alone

        def count() -> int:
            with contextlib.closing(sqlite3.connect(catalog.path)) as db:
                return int(db.execute("SELECT count(*) FROM uploads").fetchone()[0])

        assert count() == 3  # committed once each: the commit stands, it just is not known durable
        # A failed sync is never trusted again: later writes are refused before they commit.
        with pytest.raises(StorageError, match="make the catalog write durable"):
            await catalog.record_uploads([upload(9)])
        assert (count(), catalog.commits, synced_commits) == (3, 1, [1])
    finally:
        await catalog.close()
