"""Catalog backends raise the domain's errors: a full disk is InsufficientStorage (507), any other driver
error a StorageError (500), decided by SQLite's result code; nothing above a backend sees sqlite3.Error.

SQLite fills up deterministically with `PRAGMA max_page_count` on the writer's connection (SQLITE_FULL,
as a full filesystem gives). PostgreSQL's cases are in tests/test_postgres_catalog.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator
from dataclasses import replace
from pathlib import Path

import pytest

from rhinobox.app import create_app
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.catalog.sqlite_errors import sqlite_error, sqlite_errors
from rhinobox.errors import InsufficientStorage, StorageError
from rhinobox.http.keys import CATALOG
from rhinobox.jobs.sqlite import SQLiteJobStore
from tests.catalog_contract import digest, upload
from tests.helpers import AiohttpClient, assert_error, form, make_settings
from tests.samples import make_sample

LONG_NAME = "n" * 200  # a few rows fill a page


async def cap_pages(catalog: SQLiteCatalog) -> None:
    """The database may grow no more: the next write that needs a new page gets SQLITE_FULL."""

    def cap(db: sqlite3.Connection) -> None:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={pages}")

    await catalog.write(cap)


async def fill(catalog: SQLiteCatalog) -> tuple[int, InsufficientStorage]:
    """Record uploads until the catalog is full; the upload refused and the error it raised."""
    for n in range(2, 1000):
        try:
            await catalog.record_uploads([upload(n, name=f"{LONG_NAME}{n}")])
        except InsufficientStorage as exc:
            return n, exc
    raise AssertionError("the capped catalog never filled up")


@pytest.fixture
async def catalog(sqlite_catalog: SQLiteCatalog) -> SQLiteCatalog:
    await sqlite_catalog.record_uploads([upload(1)])
    return sqlite_catalog


async def test_a_full_catalog_raises_insufficient_storage(catalog: SQLiteCatalog) -> None:
    await cap_pages(catalog)
    refused, error = await fill(catalog)
    assert error.code == "insufficient_storage"
    cause = error.__cause__
    assert isinstance(cause, sqlite3.OperationalError)
    assert cause.sqlite_errorname == "SQLITE_FULL"
    assert await catalog.get_blob(digest(1)) is not None  # reads go on
    assert await catalog.get_blob(digest(refused)) is None  # the refused write left nothing
    assert (await catalog.stats()).uploads == refused - 1


async def test_writes_resume_once_there_is_room_again(catalog: SQLiteCatalog) -> None:
    await cap_pages(catalog)
    refused, _ = await fill(catalog)
    assert await catalog.get_blob(digest(refused)) is None
    await catalog.write(lambda db: db.execute("PRAGMA max_page_count=1073741823"))
    await catalog.record_uploads([upload(5000)])
    assert await catalog.get_blob(digest(5000)) is not None


async def test_a_full_catalog_answers_507_through_http(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    app = create_app(make_settings(data_dir))
    client = await aiohttp_client(app)
    catalog = app[CATALOG]
    assert isinstance(catalog, SQLiteCatalog)
    await cap_pages(catalog)
    for seed in range(200):
        response = await client.post("/ingest", data=form([(f"{LONG_NAME}{seed}.png", make_sample("png", seed)[1])]))
        if response.status != 200:
            break
    await assert_error(response, 507, "insufficient_storage")


async def test_any_other_sqlite_error_is_a_storage_error(catalog: SQLiteCatalog) -> None:
    refused = replace(upload(2), name=None)  # type: ignore[arg-type]  # ill-typed on purpose: uploads.name is NOT NULL
    with pytest.raises(StorageError) as raised:
        await catalog.record_uploads([refused])
    assert type(raised.value) is StorageError
    assert raised.value.code == "storage_error"
    assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)
    assert "SQLITE_CONSTRAINT_NOTNULL" in raised.value.message
    await catalog.record_uploads([upload(3)])  # the writer goes on


async def test_read_errors_are_storage_errors(catalog: SQLiteCatalog) -> None:
    await catalog.write(lambda db: db.execute("DROP TABLE category_stats"))
    with pytest.raises(StorageError) as raised:
        await catalog.stats()
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert "count the catalog" in raised.value.message


async def test_a_closed_catalog_refuses_reads_and_writes_with_storage_errors(tmp_path: Path) -> None:
    catalog = SQLiteCatalog(tmp_path / "catalog.sqlite3", durable=False)
    await catalog.open()
    await catalog.close()
    with pytest.raises(StorageError, match="closed"):
        await catalog.record_uploads([upload(1)])
    with pytest.raises(StorageError, match="not open"):
        await catalog.get_blob(digest(1))
    with pytest.raises(StorageError, match="not open"):
        await anext(aiter(catalog.iter_digests()))


async def test_a_catalog_that_cannot_open_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "catalog.sqlite3").write_bytes(b"this is not a database" * 100)
    catalog = SQLiteCatalog(tmp_path / "catalog.sqlite3", durable=False)
    with pytest.raises(StorageError) as raised:
        await catalog.open()
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
    assert "SQLITE_NOTADB" in raised.value.message


async def test_the_job_store_translates_too(tmp_path: Path) -> None:
    jobs = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await jobs.open()
    try:
        with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
            db.execute("DROP TABLE jobs")
        with pytest.raises(StorageError) as raised:
            await jobs.expire(0)  # a write, through its own writer thread
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(StorageError):
            await jobs.load("some-job")  # a read, on the store's reader
    finally:
        await jobs.close()


def test_only_the_result_code_decides_a_full_disk() -> None:
    full = sqlite3.OperationalError("some words")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    assert isinstance(sqlite_error(full, "do it"), InsufficientStorage)
    worded = sqlite3.OperationalError("database or disk is full")  # no result code: not a full disk
    assert type(sqlite_error(worded, "do it")) is StorageError
    extended = sqlite3.OperationalError("disk I/O error")
    extended.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE
    assert type(sqlite_error(extended, "do it")) is StorageError


async def test_an_iterator_translates_and_closes_its_source() -> None:
    closed: list[bool] = []

    async def pages() -> AsyncGenerator[int, None]:
        try:
            yield 1
            raise sqlite3.OperationalError("disk I/O error")
        finally:
            closed.append(True)

    translated = sqlite_errors.iteration("list")(pages)
    seen: list[int] = []

    async def read_all() -> None:
        async for page in translated():
            seen.append(page)

    with pytest.raises(StorageError, match="could not list"):
        await read_all()
    assert seen == [1]
    assert closed == [True]
    stopped = translated()
    assert await anext(stopped) == 1
    await stopped.aclose()
    assert closed == [True, True]
