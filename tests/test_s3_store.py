"""The S3 blob store on a real OpenStack Swift (s3api), alone and behind the whole app.

The store is checked from outside with obstore against the same bucket, never through its own reads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import obstore
import pytest
from obstore.store import S3Store

from rhinobox.app import create_app
from rhinobox.backends import make_blob_store, make_catalog
from rhinobox.blobs.s3 import PART_SIZE, S3BlobStore, S3Location, parse_s3_url
from rhinobox.errors import BlobNotFound, StorageError
from rhinobox.http.keys import STORE
from rhinobox.settings import Settings
from tests.helpers import AiohttpClient, Client, assert_error, blake3_hex, form, make_settings, spool_files
from tests.samples import SAMPLES, make_sample
from tests.servers import SwiftServer


def outside_view(settings: Settings) -> S3Store:
    """An independent client on the bucket and prefix the store under test uses."""
    location = parse_s3_url(settings.blobs)
    return S3Store(
        location.bucket,
        prefix=location.prefix,
        config={
            "endpoint": settings.s3_endpoint,
            "region": settings.s3_region,
            "access_key_id": settings.s3_access_key,
            "secret_access_key": settings.s3_secret_key,
        },
        client_options={"allow_http": True},
    )


def stored_objects(settings: Settings) -> dict[str, int]:
    """Every object under the prefix: key -> size."""
    return {meta["path"]: meta["size"] for page in obstore.list(outside_view(settings)) for meta in page}


def object_bytes(settings: Settings, digest: str) -> bytes:
    return bytes(obstore.get(outside_view(settings), f"{digest[:2]}/{digest}").bytes())


@pytest.fixture
def s3_settings(data_dir: Path, s3_overrides: dict[str, str]) -> Settings:
    return make_settings(data_dir, **s3_overrides)


@pytest.fixture
def store(s3_settings: Settings) -> Iterator[S3BlobStore]:
    blob_store = make_blob_store(s3_settings)
    assert isinstance(blob_store, S3BlobStore)
    blob_store.open()
    try:
        yield blob_store
    finally:
        blob_store.close()


def spool(store: S3BlobStore, data: bytes) -> Path:
    path = store.spool_dir / f"{os.urandom(6).hex()}.spool"
    path.write_bytes(data)
    return path


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("s3://bucket", S3Location("bucket", "")),
        ("s3://bucket/", S3Location("bucket", "")),
        ("s3://bucket/a/b/", S3Location("bucket", "a/b")),
    ],
)
def test_s3_urls_name_bucket_and_prefix(url: str, location: S3Location) -> None:
    assert parse_s3_url(url) == location


@pytest.mark.parametrize("url", ["s3:///prefix", "http://bucket/x", "s3://bucket/x?versioning=1", "bucket/x"])
def test_bad_blob_urls_are_refused_naming_the_setting(url: str, data_dir: Path) -> None:
    with pytest.raises(ValueError, match="RHINOBOX_BLOBS"):
        make_blob_store(make_settings(data_dir, blobs=url))


def test_accel_redirect_is_refused_with_s3_blobs(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="RHINOBOX_ACCEL_REDIRECT"):
        make_blob_store(make_settings(data_dir, blobs="s3://bucket/x", accel_redirect="/_blobs"))


def test_bad_catalog_url_is_refused_naming_the_setting(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="RHINOBOX_CATALOG"):
        make_catalog(make_settings(data_dir, catalog="mysql://db/rhinobox"))


def test_a_missing_bucket_fails_at_open(data_dir: Path, swift_server: SwiftServer) -> None:
    overrides = swift_server.overrides("x") | {"blobs": "s3://no-such-bucket/x"}
    blob_store = make_blob_store(make_settings(data_dir, **overrides))
    with pytest.raises(StorageError, match="no-such-bucket"):
        blob_store.open()


# -- the store alone ----------------------------------------------------------------------------


def test_commit_sends_once_and_always_drops_the_spool_file(store: S3BlobStore, s3_settings: Settings) -> None:
    data = b"hello swift " * 100
    digest = blake3_hex(data)
    first = spool(store, data)
    assert store.commit(str(first), digest) is True
    assert not first.exists()
    assert stored_objects(s3_settings) == {f"{digest[:2]}/{digest}": len(data)}
    assert object_bytes(s3_settings, digest) == data
    again = spool(store, data)
    assert store.commit(str(again), digest) is False
    assert not again.exists()
    assert store.contains(digest)
    assert store.size(digest) == len(data)
    assert store.local_path(digest) is None
    assert not store.needs_flush(digest)
    assert list(store.iter_digests()) == [digest]


def test_large_files_go_up_in_parts_and_come_back_whole(store: S3BlobStore, s3_settings: Settings) -> None:
    data = os.urandom(PART_SIZE + 1_234_567)
    digest = blake3_hex(data)
    assert store.commit(str(spool(store, data)), digest) is True
    assert object_bytes(s3_settings, digest) == data
    assert store.size(digest) == len(data)


async def test_read_range_streams_exact_slices(store: S3BlobStore) -> None:
    data = os.urandom(700_000)
    digest = blake3_hex(data)
    await asyncio.to_thread(store.commit, str(spool(store, data)), digest)
    for start, end in [(0, len(data)), (1, 2), (123_456, 654_321), (len(data) - 1, len(data)), (5, 5)]:
        got = b"".join([chunk async for chunk in store.read_range(digest, start, end)])
        assert got == data[start:end], (start, end)
    with pytest.raises(BlobNotFound):
        _ = [chunk async for chunk in store.read_range("0" * 64, 0, 10)]


def test_delete_says_whether_the_blob_existed(store: S3BlobStore, s3_settings: Settings) -> None:
    data = b"short-lived"
    digest = blake3_hex(data)
    store.commit(str(spool(store, data)), digest)
    assert store.delete(digest) is True
    assert stored_objects(s3_settings) == {}
    assert store.delete(digest) is False
    assert not store.contains(digest)
    assert store.size(digest) is None


def test_store_errors_are_per_file_os_errors_and_leave_no_spool(data_dir: Path, s3_settings: Settings) -> None:
    blob_store = make_blob_store(s3_settings)
    blob_store.open()
    assert isinstance(blob_store, S3BlobStore)
    # Point the open store at a bucket that does not exist: every request now fails.
    blob_store.location = S3Location("no-such-bucket", "x")
    blob_store._store = outside_view(make_settings(data_dir, **{**_overrides(s3_settings), "blobs": "s3://nope/x"}))
    path = spool(blob_store, b"doomed")
    with pytest.raises(OSError, match=r"S3 PUT failed \(HTTP 404\)") as failure:
        blob_store.commit(str(path), blake3_hex(b"doomed"))
    assert "nope" not in str(failure.value)  # where the store lives is for the log, not for clients
    assert not path.exists()


def test_stale_spool_files_are_removed(store: S3BlobStore) -> None:
    spool(store, b"left over")
    spool(store, b"by a crash")
    assert store.remove_stale_spool() == 2
    assert list(store.spool_dir.iterdir()) == []


def _overrides(settings: Settings) -> dict[str, str]:
    return {
        "blobs": settings.blobs,
        "s3_endpoint": settings.s3_endpoint,
        "s3_region": settings.s3_region,
        "s3_access_key": settings.s3_access_key,
        "s3_secret_key": settings.s3_secret_key,
    }


# -- behind the app -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def app_settings(request: pytest.FixtureRequest, data_dir: Path, s3_overrides: dict[str, str]) -> Settings:
    """The app on S3 blobs, with each catalog."""
    overrides = dict(s3_overrides)
    if request.param == "postgres":
        overrides["catalog"] = request.getfixturevalue("postgres_dsn")
    return make_settings(data_dir, **overrides)


@pytest.fixture
async def s3_client(aiohttp_client: AiohttpClient, app_settings: Settings) -> Client:
    return await aiohttp_client(create_app(app_settings))


async def test_batch_upload_stores_each_blob_once_and_reads_back(
    s3_client: Client, app_settings: Settings, data_dir: Path
) -> None:
    kinds = list(SAMPLES)
    files = [make_sample(kinds[i % len(kinds)], i) for i in range(60)]
    files += [("copy.bin", files[0][1]), ("big.bin", os.urandom(PART_SIZE + 10))]
    response = await s3_client.post("/ingest", data=form(files))
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    assert [r["status"] for r in body["results"]].count("stored") == 61
    assert body["results"][60]["status"] == "duplicate"
    objects = stored_objects(app_settings)
    assert len(objects) == 61
    for (name, payload), result in zip(files, body["results"], strict=True):
        assert result["hash"] == blake3_hex(payload), name
        assert objects[f"{result['hash'][:2]}/{result['hash']}"] == len(payload)
    assert spool_files(data_dir) == []
    big = body["results"][-1]["hash"]
    download = await s3_client.get(f"/files/{big}")
    assert download.status == 200
    assert blake3_hex(await download.read()) == big
    ranged = await s3_client.get(f"/files/{big}", headers={"Range": "bytes=1000-1999"})
    assert ranged.status == 206
    assert ranged.headers["Content-Range"] == f"bytes 1000-1999/{PART_SIZE + 10}"
    assert await ranged.read() == files[-1][1][1000:2000]


async def test_single_file_and_same_content_at_once(s3_client: Client, app_settings: Settings) -> None:
    _, payload = make_sample("png", 7)

    async def upload(i: int) -> str:
        response = await s3_client.post("/ingest", data=form([(f"same-{i}.png", payload)]))
        assert response.status == 200
        result: str = (await response.json())["results"][0]["status"]
        return result

    statuses = await asyncio.gather(*(upload(i) for i in range(12)))
    assert sorted(statuses) == ["duplicate"] * 11 + ["stored"]
    assert list(stored_objects(app_settings)) == [f"{blake3_hex(payload)[:2]}/{blake3_hex(payload)}"]
    meta = await (await s3_client.get(f"/files/{blake3_hex(payload)}/meta")).json()
    assert meta["upload_count"] == 12


async def test_a_resumable_upload_lands_in_the_object_store(
    s3_client: Client, app_settings: Settings, data_dir: Path
) -> None:
    """The partial bytes stay on this node's disk; the completed file is put into the object store."""
    payload = os.urandom(PART_SIZE + 1000)
    tus = {"Tus-Resumable": "1.0.0"}
    created = await s3_client.post("/uploads/", headers={**tus, "Upload-Length": str(len(payload))})
    assert created.status == 201
    url = created.headers["Location"]
    chunk = {**tus, "Content-Type": "application/offset+octet-stream"}
    half = len(payload) // 2
    assert (await s3_client.patch(url, data=payload[:half], headers={**chunk, "Upload-Offset": "0"})).status == 204
    assert list((data_dir / "uploads").glob("*.part"))  # on the node's disk meanwhile
    done = await s3_client.patch(url, data=payload[half:], headers={**chunk, "Upload-Offset": str(half)})
    assert done.status == 204, await done.text()
    digest = blake3_hex(payload)
    assert done.headers["Content-Location"] == f"/files/{digest}"
    assert object_bytes(app_settings, digest) == payload
    assert list((data_dir / "uploads").glob("*.part")) == []
    assert spool_files(data_dir) == []


async def test_delete_then_upload_again(s3_client: Client, app_settings: Settings) -> None:
    _, payload = make_sample("pdf", 3)
    digest = blake3_hex(payload)
    assert (await s3_client.post("/ingest", data=form([("a.pdf", payload)]))).status == 200
    assert (await s3_client.delete(f"/files/{digest}")).status == 204
    assert stored_objects(app_settings) == {}
    missing = await s3_client.get(f"/files/{digest}")
    await assert_error(missing, 404, "not_found")
    again = await (await s3_client.post("/ingest", data=form([("b.pdf", payload)]))).json()
    assert again["results"][0]["status"] == "stored"
    assert object_bytes(app_settings, digest) == payload


async def test_blob_missing_from_the_store_is_a_clean_404(s3_client: Client, app_settings: Settings) -> None:
    _, payload = make_sample("gif", 9)
    digest = blake3_hex(payload)
    await s3_client.post("/ingest", data=form([("g.gif", payload)]))
    obstore.delete(outside_view(app_settings), f"{digest[:2]}/{digest}")  # lost behind our back
    await assert_error(await s3_client.get(f"/files/{digest}"), 404, "not_found")


async def test_an_unreachable_store_fails_each_file_and_records_nothing(
    s3_client: Client, app_settings: Settings, data_dir: Path
) -> None:
    store = s3_client.app[STORE]
    assert isinstance(store, S3BlobStore)
    # The bucket goes away under a running node: every HEAD and PUT now fails.
    store._store = outside_view(make_settings(data_dir, **{**_overrides(app_settings), "blobs": "s3://gone/x"}))
    files = [make_sample("png", 1), make_sample("pdf", 2), ("big.bin", os.urandom(300_000))]
    response = await s3_client.post("/ingest", data=form(files))
    assert response.status == 207
    body = await response.json()
    assert [r["error"]["code"] for r in body["results"]] == ["storage_error"] * 3
    assert all("gone" not in r["error"]["message"] for r in body["results"])
    listing = await (await s3_client.get("/files")).json()
    assert listing["files"] == []
    assert spool_files(data_dir) == []
    assert stored_objects(app_settings) == {}
