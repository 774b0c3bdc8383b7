"""The pool takes batches (not single files); syncs are grouped; pins arbitrate uploads and deletes."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rhinobox.blobs.local as local_module
from rhinobox.app import create_app
from rhinobox.backends import make_catalog
from rhinobox.blobs import fsops
from rhinobox.blobs.durability import GroupSyncer
from rhinobox.blobs.local import LocalBlobStore
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.http.keys import CATALOG, PIPELINE, STORE
from rhinobox.ingest.pins import HashPins
from rhinobox.runmarker import RUN_MARKER_FILENAME
from tests.helpers import AiohttpClient, Client, assert_error, blake3_hex, first_sync_fails, form, make_settings
from tests.samples import make_sample


async def test_single_file_skips_the_pool_and_a_batch_uses_it(client: Client) -> None:
    pool = client.app[PIPELINE].resources.pool
    assert (await client.post("/ingest", data=form([make_sample("png", 1)]))).status == 200
    assert pool.files_done == 0
    batch = [make_sample("text", i) for i in range(100)]
    assert (await client.post("/ingest", data=form(batch))).status == 200
    assert pool.files_done >= 100


@pytest.mark.parametrize("files", [1, 200])
async def test_an_upload_costs_one_sync_for_its_bytes_names_and_row(client: Client, files: int) -> None:
    """One filesystem sync after the renames and the catalog commit covers all three (see test_startup)."""
    store, catalog = client.app[STORE], client.app[CATALOG]
    assert isinstance(store, LocalBlobStore)
    assert isinstance(catalog, SQLiteCatalog)
    assert catalog.makes_blobs_durable
    syncs, commits = store.syncs, catalog.commits
    batch = [make_sample("binary", i) for i in range(files)]
    response = await client.post("/ingest", data=form(batch))
    assert response.status == 200
    assert {r["status"] for r in (await response.json())["results"]} == {"stored"}
    assert (store.syncs - syncs, catalog.commits - commits) == (1, 1)
    assert not any(store.needs_flush(r["hash"]) for r in (await response.json())["results"])
    # The writer's connection commits without its own fsync (NORMAL): the shared sync is the only one.
    assert await catalog.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 1


async def test_the_answer_waits_for_the_sync_that_follows_the_catalog_commit(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row commits without SQLite's fsync; nothing is answered until the shared sync has returned."""
    catalog = client.app[CATALOG]
    assert isinstance(catalog, SQLiteCatalog)
    release, entered = threading.Event(), threading.Event()
    sync = fsops.sync_filesystem
    commits_when_synced: list[int] = []

    def held_sync(fd: int) -> None:
        commits_when_synced.append(catalog.commits)
        entered.set()
        release.wait(10)
        sync(fd)

    monkeypatch.setattr(local_module, "sync_filesystem", held_sync)
    commits = catalog.commits
    upload = asyncio.ensure_future(client.post("/ingest", data=form([make_sample("png", 7)])))
    assert await asyncio.to_thread(entered.wait, 10)
    await asyncio.sleep(0.2)
    assert not upload.done()
    assert commits_when_synced == [commits + 1], "the sync must begin after the row's commit"
    release.set()
    response = await upload
    assert response.status == 200
    assert (await response.json())["results"][0]["status"] == "stored"


def test_a_catalog_shares_the_blob_sync_only_when_durable_on_the_same_disk(tmp_path: Path) -> None:
    durable, lax = LocalBlobStore(tmp_path / "a", durable=True), LocalBlobStore(tmp_path / "b", durable=False)
    durable.open()
    lax.open()
    try:
        assert durable.sync_covering(tmp_path) == durable.sync
        assert lax.sync_covering(tmp_path) is None
        assert os.stat("/proc").st_dev != os.stat(tmp_path).st_dev
        assert durable.sync_covering(Path("/proc")) is None  # another filesystem: its sync covers nothing there
        catalog = make_catalog(make_settings(tmp_path / "a"), durable)
        assert catalog.makes_blobs_durable
        never = make_catalog(make_settings(tmp_path / "b", fsync="never"), lax)
        assert not never.makes_blobs_durable
        assert not make_catalog(make_settings(tmp_path / "a")).makes_blobs_durable  # no store: its own fsync
    finally:
        durable.close()
        lax.close()


async def test_concurrent_barriers_share_sync_rounds() -> None:
    calls = []

    def slow_sync() -> None:
        calls.append(1)
        time.sleep(0.05)

    syncer = GroupSyncer(slow_sync)
    try:
        await asyncio.gather(*(syncer.barrier() for _ in range(50)))
        assert 1 <= len(calls) <= 2
        await syncer.barrier()
        assert len(calls) <= 3
    finally:
        syncer.close()


async def test_barrier_waits_for_a_sync_that_started_after_it() -> None:
    started: list[int] = []

    def sync() -> None:
        started.append(len(started))
        time.sleep(0.05)

    syncer = GroupSyncer(sync)
    try:
        first = asyncio.ensure_future(syncer.barrier())
        await asyncio.sleep(0.01)  # the first round is running now
        await syncer.barrier()  # must not be satisfied by the round already running
        await first
        assert len(started) == 2
    finally:
        syncer.close()


async def test_sync_errors_reach_every_waiter() -> None:
    def failing() -> None:
        raise OSError(5, "I/O error")

    syncer = GroupSyncer(failing)
    try:
        results = await asyncio.gather(*(syncer.barrier() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results)
    finally:
        syncer.close()


async def test_pins_let_uploads_share_and_deletes_wait() -> None:
    pins = HashPins()
    events: list[str] = []
    await pins.pin("h")
    await pins.pin("h")

    async def delete() -> None:
        async with pins.exclusive("h"):
            events.append("delete")

    task = asyncio.ensure_future(delete())
    await asyncio.sleep(0.01)
    assert events == []
    pins.unpin("h")
    await asyncio.sleep(0.01)
    assert events == []
    pins.unpin("h")
    await task
    assert events == ["delete"]
    assert pins.pinned("h") == 0


async def test_upload_pin_waits_for_a_running_delete() -> None:
    pins = HashPins()
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def delete() -> None:
        async with pins.exclusive("h"):
            inside.set()
            await leave.wait()

    task = asyncio.ensure_future(delete())
    await inside.wait()
    pin = asyncio.ensure_future(pins.pin("h"))
    await asyncio.sleep(0.01)
    assert not pin.done()
    leave.set()
    await task
    await pin
    assert pins.pinned("h") == 1


def test_commit_never_overwrites(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, durable=False)
    store.open()
    try:
        digest = "ab" + "0" * 62
        first = store.spool_dir / "one.spool"
        first.write_bytes(b"original")
        assert store.commit(str(first), digest) is True
        second = store.spool_dir / "two.spool"
        second.write_bytes(b"impostor")
        assert store.commit(str(second), digest) is False
        assert store.path_for(digest).read_bytes() == b"original"
        assert not first.exists()
        assert not second.exists()
    finally:
        store.close()


@pytest.fixture
def durable_store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    store = LocalBlobStore(tmp_path, durable=True)
    store.open()
    yield store
    store.close()


def _spooled(store: LocalBlobStore, name: str, content: bytes) -> str:
    path = store.spool_dir / name
    path.write_bytes(content)
    return str(path)


def test_a_losing_rename_leaves_the_winner_waiting_for_its_sync(
    durable_store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commits of the same new content race; the loser must not clear the winner's "not yet synced"."""
    store, content = durable_store, b"the same new content twice"
    loser_in_flight, winner_done = threading.Event(), threading.Event()
    rename = fsops.rename_noreplace

    def held(src: str, dst: str) -> bool:
        if threading.current_thread().name == "loser":
            loser_in_flight.set()
            winner_done.wait(5)
        return rename(src, dst)

    monkeypatch.setattr(local_module, "rename_noreplace", held)
    results: dict[str, bool] = {}
    loser = threading.Thread(
        target=lambda: results.update(loser=store.commit(_spooled(store, "a", content), blake3_hex(content))),
        name="loser",
    )
    loser.start()
    loser_in_flight.wait(5)
    results["winner"] = store.commit(_spooled(store, "b", content), blake3_hex(content))
    winner_done.set()
    loser.join()
    assert results == {"loser": False, "winner": True}
    assert store.syncs == 0
    assert store.needs_flush(blake3_hex(content)), "a duplicate would be answered before the winner's sync"


def test_a_sync_that_began_before_the_rename_does_not_count_for_it(
    durable_store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, content = durable_store, b"renamed while a sync ran"
    rename = fsops.rename_noreplace

    def after_a_whole_sync(src: str, dst: str) -> bool:
        store.sync()  # the extreme case: a sync round that began and ended between mark and rename
        return rename(src, dst)

    monkeypatch.setattr(local_module, "rename_noreplace", after_a_whole_sync)
    assert store.commit(_spooled(store, "a", content), blake3_hex(content)) is True
    assert store.needs_flush(blake3_hex(content))
    store.sync()
    assert not store.needs_flush(blake3_hex(content))


async def test_after_a_failed_sync_no_flush_is_trusted_again(
    durable_store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write-back is reported once; a retried sync would say "done" for bytes that never landed."""
    failures = first_sync_fails(monkeypatch)
    content = b"written back with an error"
    assert durable_store.commit(_spooled(durable_store, "a", content), blake3_hex(content)) is True
    with pytest.raises(OSError, match="Input/output"):
        await durable_store.flush()
    assert failures == []
    with pytest.raises(OSError, match="an earlier sync failed"):
        await durable_store.flush()
    assert durable_store.needs_flush(blake3_hex(content))


async def test_a_server_whose_sync_failed_refuses_durable_answers_and_says_so(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    failures = first_sync_fails(monkeypatch)
    for seed in (1, 2):  # the second sync would succeed: it is not trusted
        response = await client.post("/ingest", data=form([make_sample("png", seed)]))
        await assert_error(response, 500, "storage_error")
    assert failures == []
    health = await client.get("/healthz")
    assert health.status == 503
    assert "blob_sync" in (await health.json())["problems"]
    with pytest.raises(OSError, match="an earlier sync failed"):
        await client.close()  # not a clean stop
    assert (data_dir / RUN_MARKER_FILENAME).exists(), "the next start must check the store"
