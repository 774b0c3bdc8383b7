"""A request's work on worker threads: cancelling it never leaves files behind, and its commit never
needs the whole queue (both found in review of the spool lane)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rhinobox.blobs.local import LocalBlobStore
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.errors import InsufficientStorage
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.pipeline import IngestPipeline
from rhinobox.ingest.sniff import MimeSniffer
from rhinobox.ingest.stages import commit_entries
from tests.helpers import (
    blob_files,
    entry_of,
    file_part,
    make_settings,
    multipart,
    multipart_headers,
    png,
    spool_files,
    wait_until,
)


class GatedSniffer(MimeSniffer):
    """Sniffing waits for `gate`; `entered` is set once a worker is inside."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def sniff_document(self, data: bytes | memoryview) -> str:
        self.entered.set()
        self.gate.wait(30)
        return super().sniff_document(data)


def body_of(count: int, size: int) -> tuple[str, AsyncIterator[bytes]]:
    body = multipart(*(file_part(os.urandom(size), f"f{i}.bin") for i in range(count)))

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    return multipart_headers()["Content-Type"], chunks()


async def wait_until_idle(pipeline: IngestPipeline, seconds: float = 30) -> None:
    pool = pipeline.resources.pool
    assert await wait_until(lambda: not (pool.queued or pool.busy), seconds), "the workers never finished"


async def test_a_cancelled_request_waits_for_its_workers_and_leaves_no_spool_file(
    tmp_path: Path, sqlite_catalog: SQLiteCatalog
) -> None:
    settings = make_settings(tmp_path / "data", workers="4")
    store = LocalBlobStore(settings.data_dir, durable=False)
    store.open()
    sniffer = GatedSniffer()
    pipeline = IngestPipeline(settings, store, sqlite_catalog, Categorizer.load(settings.data_dir), sniffer=sniffer)
    try:
        content_type, chunks = body_of(300, 1000)  # five arenas, on four workers
        task = asyncio.create_task(pipeline.ingest(content_type, chunks))
        deadline = time.monotonic() + 30
        while not (sniffer.entered.is_set() and pipeline.resources.pool.queued == 300):  # all five arenas handed over
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the request now waits for its workers
        task.cancel()
        asyncio.get_running_loop().call_later(0.2, sniffer.gate.set)  # after the cancel has landed
        with pytest.raises(asyncio.CancelledError):
            await task
        # The request is over: its workers must already be done with its files, none may be left.
        assert not pipeline.resources.pool.busy
        await wait_until_idle(pipeline)
        assert spool_files(settings.data_dir) == []
        assert blob_files(settings.data_dir) == {}
    finally:
        sniffer.gate.set()
        pipeline.close()
        store.close()


async def test_a_request_as_large_as_the_queue_commits_while_others_keep_it_busy(
    tmp_path: Path, sqlite_catalog: SQLiteCatalog
) -> None:
    """Its commit takes queue slots a chunk at a time: it never needs the queue to be empty."""
    settings = make_settings(tmp_path / "data", workers="4", queue_size="200", max_files_per_request="200")
    store = LocalBlobStore(settings.data_dir, durable=False)
    store.open()
    pipeline = IngestPipeline(settings, store, sqlite_catalog, Categorizer.load(settings.data_dir))
    stop = asyncio.Event()

    async def other_client() -> None:  # never more than 8 files queued
        while not stop.is_set():
            reserved = await pipeline.resources.pool.reserve(8)
            await pipeline.resources.pool.submit(reserved, lambda: time.sleep(0.003))

    others = [asyncio.create_task(other_client()) for _ in range(2)]
    try:
        await asyncio.sleep(0.05)
        content_type, chunks = body_of(200, 500)
        report = await asyncio.wait_for(pipeline.ingest(content_type, chunks), 20)
        assert [e.status for e in report.entries] == ["stored"] * 200
    finally:
        stop.set()
        await asyncio.gather(*others)
        pipeline.close()
        store.close()


class FullOnRename(LocalBlobStore):
    """A store whose directory cannot grow: the rename into it fails with ENOSPC."""

    def commit(self, spool_path: str, digest: str) -> bool:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), digest)


def test_a_full_disk_at_the_rename_is_insufficient_storage(tmp_path: Path) -> None:
    store = FullOnRename(tmp_path / "data", durable=False)
    store.open()
    try:
        entry = entry_of(png(1))
        entry.spool_path = str(tmp_path / "spooled")
        commit_entries(store, [entry])
        assert isinstance(entry.error, InsufficientStorage)
    finally:
        store.close()
