"""POST /ingest through a real socket: order, hashes, categories, dedup, partial success, bad input."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rhinobox.app import create_app
from rhinobox.http.keys import PIPELINE
from tests.helpers import (
    AiohttpClient,
    Client,
    assert_error,
    blake3_hex,
    blob_files,
    file_part,
    form,
    make_settings,
    multipart,
    multipart_headers,
    send_partial_upload,
    spool_files,
    wait_until,
)
from tests.samples import SAMPLES, make_sample


def uploads_table(data_dir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(data_dir / "catalog.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM uploads ORDER BY id")]


def blobs_table(data_dir: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(data_dir / "catalog.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return {row["hash"]: dict(row) for row in db.execute("SELECT * FROM blobs")}


async def test_batch_of_1000_mixed_files_keeps_order_hashes_and_categories(client: Client, data_dir: Path) -> None:
    kinds = list(SAMPLES)
    files = [make_sample(kinds[i % len(kinds)], i) for i in range(1000)]
    response = await client.post("/ingest", data=form(files))
    assert response.status == 200
    body = await response.json()
    assert (body["stored"], body["duplicates"], body["failed"]) == (1000, 0, 0)
    for i, (result, (name, payload)) in enumerate(zip(body["results"], files, strict=True)):
        kind = kinds[i % len(kinds)]
        assert result["index"] == i
        assert result["name"] == name
        assert result["status"] == "stored"
        assert result["hash"] == blake3_hex(payload)
        assert result["size"] == len(payload)
        assert result["mime"] == SAMPLES[kind][2], name
        assert result["category"] == SAMPLES[kind][3], name
        assert result["url"] == f"/files/{result['hash']}"
        assert result["error"] is None
    stored = blob_files(data_dir)
    assert len(stored) == 1000
    for name, payload in files[:50]:
        assert stored[blake3_hex(payload)].read_bytes() == payload, name
    assert len(uploads_table(data_dir)) == 1000
    assert spool_files(data_dir) == []


async def test_bad_file_in_the_middle_gives_207_and_stores_only_the_good_ones(client: Client, data_dir: Path) -> None:
    files = [make_sample("png", 1), make_sample("pdf", 2), ("empty.txt", b""), make_sample("zip", 3)]
    response = await client.post("/ingest", data=form(files))
    assert response.status == 207
    body = await response.json()
    assert [r["status"] for r in body["results"]] == ["stored", "stored", "error", "stored"]
    assert body["results"][2]["error"]["code"] == "empty_file"
    assert (body["stored"], body["duplicates"], body["failed"]) == (3, 0, 1)
    assert set(blob_files(data_dir)) == {blake3_hex(p) for _, p in files if p}
    assert len(uploads_table(data_dir)) == 3


async def test_fifty_clients_same_new_content_one_blob_fifty_records(client: Client, data_dir: Path) -> None:
    _, payload = make_sample("jpeg", 42)

    async def upload(i: int) -> dict[str, Any]:
        response = await client.post("/ingest", data=form([(f"copy-{i}.jpg", payload)]))
        assert response.status == 200
        return dict(await response.json())

    bodies = await asyncio.gather(*(upload(i) for i in range(50)))
    statuses = sorted(b["results"][0]["status"] for b in bodies)
    assert statuses == ["duplicate"] * 49 + ["stored"]
    assert list(blob_files(data_dir)) == [blake3_hex(payload)]
    uploads = uploads_table(data_dir)
    assert len(uploads) == 50
    assert {u["name"] for u in uploads} == {f"copy-{i}.jpg" for i in range(50)}
    assert blobs_table(data_dir)[blake3_hex(payload)]["upload_count"] == 50


async def test_duplicate_upload_leaves_the_stored_blob_untouched(client: Client, data_dir: Path) -> None:
    name, payload = make_sample("pdf", 7)
    first = await (await client.post("/ingest", data=form([(name, payload)]))).json()
    blob = blob_files(data_dir)[first["results"][0]["hash"]]
    before = blob.stat()
    again = await client.post("/ingest/media", data=form([("again.pdf", payload)]))
    assert again.status == 200
    result = (await again.json())["results"][0]
    assert result["status"] == "duplicate"
    assert result["hash"] == first["results"][0]["hash"]
    after = blob.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


async def test_large_file_streams_to_spool_and_hashes_right(client: Client, data_dir: Path) -> None:
    payload = bytes(itertools.islice(itertools.cycle(range(251)), 5 * 1024 * 1024 + 17))
    response = await client.post("/ingest", data=form([("big.bin", payload), make_sample("png", 3)]))
    assert response.status == 200
    results = (await response.json())["results"]
    assert results[0]["hash"] == blake3_hex(payload)
    assert results[0]["size"] == len(payload)
    assert blob_files(data_dir)[results[0]["hash"]].read_bytes() == payload
    assert spool_files(data_dir) == []


async def test_hint_comment_and_claimed_type_are_recorded(client: Client, data_dir: Path) -> None:
    name, payload = make_sample("png", 9)
    data = form([(name, payload)], content_type="text/plain", category="Holiday Pics/../2024", comment="beach")
    response = await client.post("/ingest", data=data)
    result = (await response.json())["results"][0]
    assert result["mime"] == "image/png"  # the client's text/plain is recorded, not trusted
    assert result["category"] == "images/png/holiday-pics/2024"
    (upload,) = uploads_table(data_dir)
    assert upload["hint"] == "holiday-pics/2024"
    assert upload["comment"] == "beach"
    assert upload["claimed_type"] == "text/plain"
    assert upload["category"] == "images/png/holiday-pics/2024"
    assert blobs_table(data_dir)[result["hash"]]["category"] == "images/png"


async def test_text_fields_after_the_files_still_apply(client: Client, data_dir: Path) -> None:
    data = aiohttp.FormData()
    name, payload = make_sample("mp3", 1)
    data.add_field("file", payload, filename=name, content_type="audio/mpeg")
    data.add_field("category", "podcasts")
    response = await client.post("/ingest", data=data)
    assert (await response.json())["results"][0]["category"] == "audio/mpeg/podcasts"


@pytest.mark.parametrize(
    "raw_name",
    [
        "../../etc/passwd",
        "/absolute/path.png",
        "dir\\windows\\name.png",
        "ctrl\x00\x01\x1f\x7fname.png",
        "ü" * 600 + ".png",
        "..",
    ],
)
async def test_filenames_are_metadata_never_paths(client: Client, data_dir: Path, raw_name: str) -> None:
    _, payload = make_sample("png", len(raw_name))
    body = multipart(file_part(payload, raw_name.encode()))
    response = await client.post("/ingest", data=body, headers=multipart_headers())
    assert response.status == 200
    result = (await response.json())["results"][0]
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in result["name"])
    assert len(result["name"]) <= 255
    files = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file())
    digest = blake3_hex(payload)
    assert f"blobs/{digest[:2]}/{digest}" in files
    assert all(f.startswith(("blobs/", "catalog.sqlite3", "rhinobox.lock", "rhinobox.running")) for f in files), files


async def test_non_utf8_filename_is_stored_safely(client: Client, data_dir: Path) -> None:
    _, payload = make_sample("gif", 5)
    body = multipart(file_part(payload, b"caf\xe9\xff.gif"))
    response = await client.post("/ingest", data=body, headers=multipart_headers())
    assert response.status == 200
    result = (await response.json())["results"][0]
    assert result["name"].startswith("caf")
    assert result["name"].encode("utf-8")
    assert uploads_table(data_dir)[0]["name"] == result["name"]


async def test_rfc5987_filename_is_decoded(client: Client) -> None:
    _, payload = make_sample("png", 11)
    disposition = "form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC%20rates.png"
    body = multipart(({"Content-Disposition": disposition}, payload))
    response = await client.post("/ingest", data=body, headers=multipart_headers())
    assert (await response.json())["results"][0]["name"] == "€ rates.png"


# -- bad input ---------------------------------------------------------------------------------


def store_is_empty(data_dir: Path) -> bool:
    return blob_files(data_dir) == {} and spool_files(data_dir) == [] and uploads_table(data_dir) == []


async def test_not_multipart_is_415(client: Client, data_dir: Path) -> None:
    await assert_error(await client.post("/ingest", data=b"hello"), 415, "not_multipart")
    response = await client.post("/ingest", json={"file": "x"})
    await assert_error(response, 415, "not_multipart")
    assert store_is_empty(data_dir)


@pytest.mark.parametrize(
    "body",
    [
        b"garbage without any boundary",
        b'--b\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\nunterminated',
        b"--b\r\nNo-Colon-Header\r\n\r\nx\r\n--b--\r\n",
        b"--b\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--b--\r\n",
    ],
)
async def test_malformed_multipart_is_400(client: Client, data_dir: Path, body: bytes) -> None:
    response = await client.post("/ingest", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    await assert_error(response, 400, "malformed_multipart")
    assert store_is_empty(data_dir)


async def test_missing_boundary_is_400(client: Client) -> None:
    response = await client.post("/ingest", data=b"x", headers={"Content-Type": "multipart/form-data"})
    await assert_error(response, 400, "malformed_multipart")


async def test_no_file_parts_is_400(client: Client, data_dir: Path) -> None:
    data = aiohttp.FormData(default_to_multipart=True)
    data.add_field("comment", "only text")
    data.add_field("other", "field")
    await assert_error(await client.post("/ingest", data=data), 400, "no_files")
    assert store_is_empty(data_dir)


async def test_single_empty_file_is_422(client: Client, data_dir: Path) -> None:
    response = await client.post("/ingest", data=form([("empty.bin", b"")]))
    assert response.status == 422
    body = await response.json()
    assert body["results"][0]["error"]["code"] == "empty_file"
    assert body["failed"] == 1
    assert store_is_empty(data_dir)


async def test_file_over_the_limit_is_413_and_the_rest_goes_on(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, max_upload_mb="1")))
    limit = 1024 * 1024
    exact = bytes(itertools.islice(itertools.cycle(range(7)), limit))
    files = [
        ("over.bin", b"x" * (limit + 1)),
        ("exact.bin", exact),
        make_sample("png", 1),
        ("big.bin", b"y" * 3 * limit),
    ]
    response = await client.post("/ingest", data=form(files))
    assert response.status == 207
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == ["error", "stored", "stored", "error"]
    assert results[0]["error"]["code"] == "file_too_large"
    assert results[3]["error"]["code"] == "file_too_large"
    assert set(blob_files(data_dir)) == {blake3_hex(exact), blake3_hex(files[2][1])}
    assert spool_files(data_dir) == []
    single = await client.post("/ingest", data=form([("over.bin", b"z" * (limit + 1))]))
    assert single.status == 413
    assert (await single.json())["results"][0]["error"]["code"] == "file_too_large"


async def test_too_many_files_rejects_the_extra_parts(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, max_files_per_request="3")))
    files = [make_sample("text", i) for i in range(5)]
    response = await client.post("/ingest", data=form(files))
    assert response.status == 207
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == ["stored"] * 3 + ["error"] * 2
    assert {r["error"]["code"] for r in results[3:]} == {"too_many_files"}
    assert set(blob_files(data_dir)) == {blake3_hex(p) for _, p in files[:3]}


async def test_oversized_text_field_is_413(client: Client, data_dir: Path) -> None:
    data = form([make_sample("png", 1)], comment="x" * (64 * 1024 + 1))
    await assert_error(await client.post("/ingest", data=data), 413, "field_too_large")
    assert store_is_empty(data_dir)


async def test_full_queue_answers_503_with_retry_after(client: Client, data_dir: Path) -> None:
    pipeline = client.app[PIPELINE]
    release = threading.Event()
    blocker = asyncio.ensure_future(pipeline.resources.pool.run(pipeline.resources.pool.capacity, release.wait))
    await asyncio.sleep(0.05)
    try:
        response = await client.post("/ingest", data=form([make_sample("png", 1)]))
        await assert_error(response, 503, "overloaded")
        assert response.headers["Retry-After"].isdigit()
        assert store_is_empty(data_dir)
    finally:
        release.set()
        await blocker
    response = await client.post("/ingest", data=form([make_sample("png", 1)]))
    assert response.status == 200


async def test_low_disk_space_answers_507_before_writing(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, min_free_mb=str(1 << 40))))
    response = await client.post("/ingest", data=form([make_sample("png", 1)]))
    await assert_error(response, 507, "insufficient_storage")
    assert store_is_empty(data_dir)


async def test_wrong_method_is_a_json_405(client: Client) -> None:
    response = await client.get("/ingest")
    await assert_error(response, 405, "method_not_allowed")


async def test_client_disconnect_mid_upload_leaves_nothing_behind(client: Client, data_dir: Path) -> None:
    """A client that sends one whole small file, then half of a large one, then vanishes."""
    _, small = make_sample("png", 1)
    _, writer = await send_partial_upload(
        client.server.host,
        client.server.port,
        [("a.png", small), ("big.bin", b"q" * (3 * 1024 * 1024))],
        declared_length=20_000_000,
    )
    await asyncio.sleep(0.3)
    writer.close()
    await writer.wait_closed()
    pool = client.app[PIPELINE].resources.pool
    await wait_until(lambda: not spool_files(data_dir) and pool.queued == 0, 5.0)
    assert spool_files(data_dir) == []
    assert blake3_hex(b"q" * (3 * 1024 * 1024)) not in blob_files(data_dir)
    assert uploads_table(data_dir) == []
    ok = await client.post("/ingest", data=form([make_sample("pdf", 1)]))
    assert ok.status == 200


async def test_fsync_never_mode_stores_too(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, fsync="never")))
    files = [make_sample("wav", i) for i in range(20)]
    response = await client.post("/ingest", data=form(files))
    assert response.status == 200
    assert set(blob_files(data_dir)) == {blake3_hex(p) for _, p in files}


async def test_curl_upload(client: Client, data_dir: Path, tmp_path: Path) -> None:
    name, payload = make_sample("pdf", 99)
    path = tmp_path / name
    path.write_bytes(payload)
    url = f"http://{client.server.host}:{client.server.port}/ingest"
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-F", f"file=@{path}", "-F", "comment=via curl", url, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert blake3_hex(payload) in out.decode()
    assert uploads_table(data_dir)[0]["comment"] == "via curl"


async def test_content_repeated_in_one_batch_is_stored_by_its_first_file(client: Client, data_dir: Path) -> None:
    for round_ in range(3):
        files = [make_sample("binary", 10_000 * round_ + i) for i in range(600)]
        files[450] = ("again.bin", files[3][1])
        files[599] = ("and-again.bin", files[3][1])
        response = await client.post("/ingest", data=form(files))
        results = (await response.json())["results"]
        assert [results[i]["status"] for i in (3, 450, 599)] == ["stored", "duplicate", "duplicate"]
        assert len({r["hash"] for r in results}) == 598
    assert len(uploads_table(data_dir)) == 1800
