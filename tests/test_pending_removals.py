"""Blobs whose removal failed are remembered and removed later, so no blob stays without a row.

A failed request's cleanup and a delete's second step unlink a blob; when that unlink fails, the hash
goes to memory and to a marker file in `<data dir>/pending-removals/`. The running server retries it
under the hash's exclusive hold (never while an upload pins it, never once a row names it), at stop
too, and a start finishes what an earlier run left pending before serving.
"""

from __future__ import annotations

import asyncio
import errno
import random
from pathlib import Path

import pytest

from rhinobox.app import create_app
from rhinobox.blobs.store import BlobStore
from rhinobox.errors import StorageError
from rhinobox.http.keys import CATALOG, PIPELINE, STORE
from rhinobox.ingest import delete as delete_module
from rhinobox.ingest.delete import retry_pending_removals
from rhinobox.ingest.pending_removals import PENDING_REMOVALS_DIRNAME, PendingRemovals
from rhinobox.ingest.resources import IngestResources
from tests.helpers import (
    AiohttpClient,
    Client,
    assert_error,
    blake3_hex,
    blob_files,
    form,
    make_settings,
    record_fails_once,
)
from tests.server_process import RhinoBoxProcess
from tests.test_startup import reconciled


def unlink_fails_once(monkeypatch: pytest.MonkeyPatch, store: BlobStore) -> None:
    """The store's next blob removal fails as a failing disk would; later ones work."""
    real = store.delete

    def delete(digest: str) -> bool:
        monkeypatch.setattr(store, "delete", real)
        raise StorageError("could not delete the blob (Input/output error)")

    monkeypatch.setattr(store, "delete", delete)


def resources_of(client: Client) -> IngestResources:
    return client.app[PIPELINE].resources


async def retry(client: Client) -> int:
    res = resources_of(client)
    return await retry_pending_removals(res.store, res.catalog, res.pins, res.removals)


async def orphaned_upload(client: Client, monkeypatch: pytest.MonkeyPatch, data: bytes) -> str:
    """Upload `data` while its record and then the removal of its blob fail: an orphan, remembered."""
    record_fails_once(monkeypatch, client.app[CATALOG])
    unlink_fails_once(monkeypatch, client.app[STORE])
    response = await client.post("/ingest", data=form([("a.bin", data)]))
    await assert_error(response, 500, "storage_error")
    return blake3_hex(data)


# -- The record ------------------------------------------------------------------------------------------


def markers(data_dir: Path) -> list[str]:
    """The hashes recorded as pending removals in `data_dir`."""
    directory = data_dir / PENDING_REMOVALS_DIRNAME
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def plant_markers(data_dir: Path, *digests: str) -> None:
    (data_dir / PENDING_REMOVALS_DIRNAME).mkdir(exist_ok=True)
    for digest in digests:
        (data_dir / PENDING_REMOVALS_DIRNAME / digest).touch()


def test_the_record_survives_a_new_process(tmp_path: Path) -> None:
    digests = [blake3_hex(bytes([n])) for n in range(3)]
    first = PendingRemovals.in_data_dir(tmp_path)
    for digest in digests:
        first.remember(digest)
    (tmp_path / PENDING_REMOVALS_DIRNAME / "not-a-hash.tmp").touch()  # ignored

    later = PendingRemovals.in_data_dir(tmp_path)
    assert later.load() == 3
    assert later.pending() == sorted(digests)
    later.forget(digests[0])
    later.forget(digests[0])  # idempotent
    assert markers(tmp_path) == sorted([*digests[1:], "not-a-hash.tmp"])


def test_a_record_that_cannot_be_written_is_kept_in_memory_and_written_later(tmp_path: Path) -> None:
    removals = PendingRemovals(tmp_path / "not-yet" / PENDING_REMOVALS_DIRNAME)  # its parent is missing
    removals.remember("a" * 64)
    removals.remember("b" * 64)
    assert removals.pending() == ["a" * 64, "b" * 64]
    removals.forget("b" * 64)
    (tmp_path / "not-yet").mkdir()
    removals.write_unwritten()
    assert markers(tmp_path / "not-yet") == ["a" * 64]


# -- The running server ----------------------------------------------------------------------------------


async def test_a_blob_whose_removal_failed_is_removed_by_the_next_retry(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    digest = await orphaned_upload(client, monkeypatch, random.Random(1).randbytes(4096))
    assert set(blob_files(data_dir)) == {digest}
    assert resources_of(client).removals.pending() == [digest]
    assert markers(data_dir) == [digest]

    assert await retry(client) == 0
    assert blob_files(data_dir) == {}
    assert resources_of(client).removals.pending() == []
    assert markers(data_dir) == []


async def test_a_retry_keeps_a_blob_that_a_row_names_by_then(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    data = random.Random(2).randbytes(4096)
    digest = await orphaned_upload(client, monkeypatch, data)
    again = await client.post("/ingest", data=form([("b.bin", data)]))  # the same content, recorded this time
    assert (await again.json())["results"][0]["status"] == "duplicate"

    assert await retry(client) == 0
    assert set(blob_files(data_dir)) == {digest}
    assert await (await client.get(f"/files/{digest}")).read() == data


async def test_a_retry_waits_while_an_upload_pins_the_hash(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    digest = await orphaned_upload(client, monkeypatch, random.Random(3).randbytes(4096))
    pins = resources_of(client).pins
    await pins.pin(digest)  # an upload of the same content, between its commit and its record
    retrying = asyncio.create_task(retry(client))
    await asyncio.sleep(0.05)
    assert not retrying.done()
    assert set(blob_files(data_dir)) == {digest}
    pins.unpin(digest)
    assert await retrying == 0
    assert blob_files(data_dir) == {}


async def test_a_failed_retry_keeps_the_hash_pending(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    digest = await orphaned_upload(client, monkeypatch, random.Random(4).randbytes(4096))
    unlink_fails_once(monkeypatch, client.app[STORE])
    assert await retry(client) == 1
    assert set(blob_files(data_dir)) == {digest}
    assert await retry(client) == 0
    assert blob_files(data_dir) == {}


async def test_a_delete_whose_unlink_fails_answers_an_error_and_removes_the_blob_later(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    data = random.Random(5).randbytes(4096)
    stored = await client.post("/ingest", data=form([("a.bin", data)]))
    digest = (await stored.json())["results"][0]["hash"]
    unlink_fails_once(monkeypatch, client.app[STORE])
    await assert_error(await client.delete(f"/files/{digest}"), 500, "storage_error")
    assert (await client.get(f"/files/{digest}")).status == 404  # the row went first
    assert resources_of(client).removals.pending() == [digest]
    assert await retry(client) == 0
    assert blob_files(data_dir) == {}


async def test_a_delete_whose_catalog_write_fails_after_its_commit_removes_the_blob_later(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    kept, lost = random.Random(9).randbytes(4096), random.Random(10).randbytes(4096)
    assert (await client.post("/ingest", data=form([("a.bin", kept), ("b.bin", lost)]))).status == 200
    catalog = client.app[CATALOG]
    real = catalog.delete_blob

    async def delete_blob(digest: str) -> bool:
        if digest == blake3_hex(lost):
            await real(digest)  # the row's removal landed, then the write was reported failed (its sync)
        raise StorageError("could not write the catalog (Input/output error)")

    monkeypatch.setattr(catalog, "delete_blob", delete_blob)
    for data in (kept, lost):
        await assert_error(await client.delete(f"/files/{blake3_hex(data)}"), 500, "storage_error")
    monkeypatch.setattr(catalog, "delete_blob", real)
    assert resources_of(client).removals.pending() == sorted([blake3_hex(kept), blake3_hex(lost)])
    assert await retry(client) == 0
    assert set(blob_files(data_dir)) == {blake3_hex(kept)}  # a row still names it: it stays
    assert await (await client.get(f"/files/{blake3_hex(kept)}")).read() == kept


async def test_after_a_failed_sync_removals_wait_for_the_next_start(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    digest = await orphaned_upload(client, monkeypatch, random.Random(11).randbytes(4096))
    store = client.app[STORE]
    monkeypatch.setattr(store, "sync_failure", OSError(errno.EIO, "an earlier sync failed"))
    assert await retry(client) == 1
    assert set(blob_files(data_dir)) == {digest}
    assert markers(data_dir) == [digest]
    with pytest.raises(OSError, match="an earlier sync failed"):  # the stop leaves it too, and is not clean
        await client.close()
    assert set(blob_files(data_dir)) == {digest}
    second = await aiohttp_client(create_app(make_settings(data_dir)))
    assert blob_files(data_dir) == {}
    assert (await reconciled(second))["reconcile"]["orphan_blobs"] == 0


async def test_the_server_retries_by_itself_while_serving(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delete_module, "RETRY_INTERVAL_S", 0.02)
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    await orphaned_upload(client, monkeypatch, random.Random(6).randbytes(4096))
    for _ in range(250):
        if not blob_files(data_dir):
            break
        await asyncio.sleep(0.02)
    assert blob_files(data_dir) == {}
    assert resources_of(client).removals.pending() == []


async def test_the_stop_retries_what_is_still_pending(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    await orphaned_upload(client, monkeypatch, random.Random(7).randbytes(4096))
    await client.close()
    assert blob_files(data_dir) == {}


# -- The next start --------------------------------------------------------------------------------------


async def test_a_start_removes_what_an_earlier_run_left_pending(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    kept = random.Random(8).randbytes(4096)
    assert (await first.post("/ingest", data=form([("kept.bin", kept)]))).status == 200
    await first.close()
    # What a run killed after failed unlinks leaves: an orphan, and a hash whose content was recorded since.
    orphan = b"stored by a request that failed; its removal failed too"
    orphan_digest, kept_digest = blake3_hex(orphan), blake3_hex(kept)
    (data_dir / "blobs" / orphan_digest[:2] / orphan_digest).write_bytes(orphan)
    plant_markers(data_dir, orphan_digest, kept_digest)

    second = await aiohttp_client(create_app(make_settings(data_dir)))
    assert set(blob_files(data_dir)) == {kept_digest}
    assert markers(data_dir) == []
    assert (await reconciled(second))["reconcile"]["orphan_blobs"] == 0
    assert await (await second.get(f"/files/{kept_digest}")).read() == kept


async def test_a_group_start_removes_what_an_earlier_run_left_pending(data_dir: Path) -> None:
    """With several serving processes, the supervisor finishes the record before any of them starts."""
    with RhinoBoxProcess(data_dir, RHINOBOX_PROCESSES="2"):
        pass  # creates the data directory's layout and catalog
    orphan = b"left pending by a group member"
    digest = blake3_hex(orphan)
    (data_dir / "blobs" / digest[:2] / digest).write_bytes(orphan)
    plant_markers(data_dir, digest)
    with RhinoBoxProcess(data_dir, RHINOBOX_PROCESSES="2"):
        assert blob_files(data_dir) == {}
        assert markers(data_dir) == []
