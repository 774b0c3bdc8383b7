"""Fixtures: settings on a temp data dir, the app on a real socket through aiohttp's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rhinobox.app import create_app
from rhinobox.blobs.local import LocalBlobStore
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.ingest.magic_cookies import load_prefilter
from rhinobox.ingest.magic_db import MagicDatabase
from rhinobox.ingest.magic_gates import MimeTestFilter, load_mime_filter
from rhinobox.settings import Settings
from tests.helpers import AiohttpClient, Client, make_settings

# Re-exported for test modules that still import them from here; new code imports them from tests.helpers.
__all__ = ["AiohttpClient", "make_settings"]

pytest_plugins = ["tests.servers"]  # real PostgreSQL and Swift, started only by tests that ask for them


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def sqlite_catalog(tmp_path: Path) -> AsyncIterator[SQLiteCatalog]:
    """An open SQLite catalog in a temp dir (the contract tests and the writer tests use it)."""
    catalog = SQLiteCatalog(tmp_path / "catalog.sqlite3", durable=False)
    await catalog.open()
    try:
        yield catalog
    finally:
        await catalog.close()


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    """An open local blob store in a temp dir, without syncs (the stage and coalescing tests use it)."""
    blobs = LocalBlobStore(tmp_path / "data", durable=False)
    blobs.open()
    yield blobs
    blobs.close()


@pytest.fixture(scope="session")
def database() -> MagicDatabase:
    """The machine's magic database, as the sniffer reads it."""
    loaded = load_prefilter()
    assert loaded is not None
    return loaded[0]


@pytest.fixture(scope="session")
def mime_filter() -> MimeTestFilter:
    """The Python gates' filter over that database (the reference for the compiled one)."""
    built = load_mime_filter()
    assert built is not None
    return built
