"""Dedup-aware upload: POST /blobs/missing, PUT /blobs/{hash}, and declared digests on POST /ingest."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rhinobox.app import create_app
from tests.helpers import (
    AiohttpClient,
    Client,
    MultipartPart,
    assert_error,
    blake3_hex,
    blob_files,
    field_part,
    file_part,
    form,
    get_stats,
    make_settings,
    multipart,
    multipart_headers,
    spool_files,
    wait_until,
)
from tests.samples import make_sample


async def stats(client: Client) -> tuple[int, int]:
    body = await get_stats(client)
    return body["blobs"], body["uploads"]


# -- POST /blobs/missing -----------------------------------------------------------------------


async def test_missing_answers_in_the_order_given(client: Client) -> None:
    stored = [blake3_hex(f"have {i}".encode()) for i in range(3)]
    response = await client.post("/ingest", data=form([(f"{i}.txt", f"have {i}".encode()) for i in range(3)]))
    assert response.status == 200
    absent = [blake3_hex(f"lack {i}".encode()) for i in range(4)]
    asked = [absent[2], stored[0], absent[0], stored[2], absent[3], absent[1], absent[0]]
    response = await client.post("/blobs/missing", json={"hashes": asked})
    assert response.status == 200
    assert await response.json() == {"missing": [absent[2], absent[0], absent[3], absent[1]]}
    empty = await client.post("/blobs/missing", json={"hashes": []})
    assert await empty.json() == {"missing": []}


async def test_missing_takes_ten_thousand(client: Client) -> None:
    hashes = [blake3_hex(str(i).encode()) for i in range(10_000)]
    response = await client.post("/blobs/missing", json={"hashes": hashes})
    assert response.status == 200
    assert (await response.json())["missing"] == hashes
    too_many = await client.post("/blobs/missing", json={"hashes": [*hashes, blake3_hex(b"one more")]})
    await assert_error(too_many, 413, "too_many_hashes")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_body"),
        (b"[]", 400, "invalid_body"),
        (b'{"hashes": "abc"}', 400, "invalid_body"),
        (b'{"hash": []}', 400, "invalid_body"),
        (b'{"hashes": ["abc"]}', 400, "bad_hash"),
        (json.dumps({"hashes": ["A" * 64]}).encode(), 400, "bad_hash"),
        (json.dumps({"hashes": [7]}).encode(), 400, "bad_hash"),
        (b" " * (3 * 1024 * 1024), 413, "too_many_hashes"),
    ],
)
async def test_missing_bad_bodies(client: Client, data_dir: Path, body: bytes, status: int, code: str) -> None:
    response = await client.post("/blobs/missing", data=body, headers={"Content-Type": "application/json"})
    await assert_error(response, status, code)
    assert blob_files(data_dir) == {}


# -- PUT /blobs/{hash} -------------------------------------------------------------------------


async def test_put_stores_a_raw_body(client: Client, data_dir: Path) -> None:
    _, payload = make_sample("python", 1)
    digest = blake3_hex(payload)
    response = await client.put(
        f"/blobs/{digest}",
        data=payload,
        headers={"X-Filename": urllib.parse.quote("tool ü.py"), "Content-Type": "text/plain"},
    )
    assert response.status == 201
    assert response.headers["Location"] == f"/files/{digest}"
    body = await response.json()
    assert body == {
        "name": "tool ü.py",
        "status": "stored",
        "hash": digest,
        "size": len(payload),
        "mime": "text/x-script.python",
        "category": "code/python",
        "url": f"/files/{digest}",
    }
    assert blob_files(data_dir)[digest].read_bytes() == payload
    meta = await (await client.get(f"/files/{digest}/meta")).json()
    assert [(u["name"], u["claimed_type"]) for u in meta["uploads"]] == [("tool ü.py", "text/plain")]
    assert spool_files(data_dir) == []


async def test_put_of_a_stored_hash_needs_no_body(client: Client, data_dir: Path) -> None:
    _, payload = make_sample("png", 2)
    digest = blake3_hex(payload)
    assert (await client.put(f"/blobs/{digest}", data=payload)).status == 201
    again = await client.put(f"/blobs/{digest}", data=b"", headers={"X-Filename": "again.png"})
    assert again.status == 200
    body = await again.json()
    assert (body["status"], body["hash"], body["size"], body["mime"]) == (
        "duplicate",
        digest,
        len(payload),
        "image/png",
    )
    meta = await (await client.get(f"/files/{digest}/meta")).json()
    assert [u["name"] for u in meta["uploads"]] == ["unnamed", "again.png"]
    assert await stats(client) == (1, 2)
    assert blob_files(data_dir)[digest].read_bytes() == payload


async def test_put_with_the_wrong_content_stores_nothing(client: Client, data_dir: Path) -> None:
    declared = blake3_hex(b"what I said")
    response = await client.put(f"/blobs/{declared}", data=b"what I sent")
    message = await assert_error(response, 422, "digest_mismatch")
    assert blake3_hex(b"what I sent") in message
    assert blob_files(data_dir) == {}
    assert spool_files(data_dir) == []
    assert await stats(client) == (0, 0)


async def test_put_large_body_streams_in_blocks(client: Client, data_dir: Path) -> None:
    payload = b"".join(i.to_bytes(4, "big") for i in range(800_000))  # 3.2 MB: several write blocks
    digest = blake3_hex(payload)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    response = await client.put(f"/blobs/{digest}", data=chunks())  # chunked: no Content-Length
    assert response.status == 201
    assert blob_files(data_dir)[digest].read_bytes() == payload
    wrong = await client.put(f"/blobs/{blake3_hex(b'x')}", data=chunks())
    await assert_error(wrong, 422, "digest_mismatch")
    assert spool_files(data_dir) == []
    assert set(blob_files(data_dir)) == {digest}


@pytest.mark.parametrize("chunked", [False, True])
async def test_put_over_the_size_limit_is_413(aiohttp_client: AiohttpClient, data_dir: Path, chunked: bool) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, max_upload_mb="1")))
    payload = b"z" * (1024 * 1024 + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    response = await client.put(f"/blobs/{blake3_hex(payload)}", data=chunks() if chunked else payload)
    await assert_error(response, 413, "file_too_large")
    assert blob_files(data_dir) == {}
    assert spool_files(data_dir) == []
    ok = await client.put(f"/blobs/{blake3_hex(payload[:-1])}", data=payload[:-1])
    assert ok.status == 201


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/blobs/abc", 400, "bad_hash"), (f"/blobs/{'F' * 64}", 400, "bad_hash"), ("/blobs/missing", 400, "bad_hash")],
)
async def test_put_bad_hash(client: Client, data_dir: Path, path: str, status: int, code: str) -> None:
    await assert_error(await client.put(path, data=b"hello"), status, code)
    assert blob_files(data_dir) == {}


async def test_put_empty_body_of_unknown_hash(client: Client, data_dir: Path) -> None:
    await assert_error(await client.put(f"/blobs/{blake3_hex(b'')}", data=b""), 422, "empty_file")
    assert blob_files(data_dir) == {}
    assert spool_files(data_dir) == []


async def test_put_client_disconnect_leaves_nothing(client: Client, data_dir: Path) -> None:
    payload = b"q" * (3 * 1024 * 1024)
    digest = blake3_hex(payload)
    assert client.port is not None
    sock = socket.create_connection(("127.0.0.1", client.port))
    head = f"PUT /blobs/{digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
    sock.sendall(head + payload[: 2 * 1024 * 1024])
    await asyncio.sleep(0.3)  # let the server spool part of it
    sock.close()
    await wait_until(lambda: not spool_files(data_dir), 5.0)
    assert spool_files(data_dir) == []
    assert blob_files(data_dir) == {}
    assert (await client.put(f"/blobs/{digest}", data=payload)).status == 201  # the server is fine


# -- declared digests on POST /ingest ----------------------------------------------------------


async def ingest_raw(client: Client, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post("/ingest", data=body, headers=multipart_headers())
    body_json: dict[str, Any] = await response.json()
    return response.status, body_json


SMALL = b"small file " * 10
LARGE = bytes(range(256)) * 2048  # 512 KiB: streams through a spool file


@pytest.mark.parametrize("payload", [SMALL, LARGE], ids=["arena", "spooled"])
@pytest.mark.parametrize(
    "declare",
    [
        lambda d: {"Content-Digest": f"blake3={d}"},
        lambda d: {"Content-Digest": f"blake3=:{base64.b64encode(bytes.fromhex(d)).decode()}:"},
        lambda d: {"Content-Digest": f"sha-256=:AAAA:, blake3={d.upper()}"},
    ],
    ids=["hex", "rfc9530-base64", "among-others"],
)
async def test_content_digest_header_is_verified(
    client: Client, data_dir: Path, payload: bytes, declare: Callable[[str], dict[str, str]]
) -> None:
    digest = blake3_hex(payload)
    status, body = await ingest_raw(client, multipart(file_part(payload, **declare(digest))))
    assert status == 200
    assert body["results"][0]["status"] == "stored"
    assert blob_files(data_dir)[digest].read_bytes() == payload
    wrong = blake3_hex(b"something else")
    status, body = await ingest_raw(client, multipart(file_part(payload + b"!", **declare(wrong))))
    assert status == 422
    assert body["results"][0]["error"]["code"] == "digest_mismatch"
    assert set(blob_files(data_dir)) == {digest}
    assert spool_files(data_dir) == []


@pytest.mark.parametrize("payload", [SMALL, LARGE], ids=["arena", "spooled"])
async def test_digest_form_field_is_verified(client: Client, data_dir: Path, payload: bytes) -> None:
    digest = blake3_hex(payload)
    status, body = await ingest_raw(client, multipart(field_part("files.blake3", digest), file_part(payload)))
    assert status == 200
    assert body["results"][0]["hash"] == digest
    status, body = await ingest_raw(
        client, multipart(field_part("files.blake3", blake3_hex(b"other")), file_part(payload + b"?"))
    )
    assert status == 422
    assert body["results"][0]["error"]["code"] == "digest_mismatch"
    assert set(blob_files(data_dir)) == {digest}
    assert spool_files(data_dir) == []


async def test_one_mismatch_in_a_batch_fails_only_that_file(client: Client, data_dir: Path) -> None:
    good, bad = b"good bytes", b"bad bytes"
    status, body = await ingest_raw(
        client,
        multipart(
            file_part(good, "good.txt", **{"Content-Digest": f"blake3={blake3_hex(good)}"}),
            file_part(bad, "bad.txt", **{"Content-Digest": f"blake3={blake3_hex(b'not it')}"}),
            file_part(b"undeclared", "plain.txt"),
        ),
    )
    assert status == 207
    results = body["results"]
    assert [r["status"] for r in results] == ["stored", "error", "stored"]
    assert results[1]["error"]["code"] == "digest_mismatch"
    assert set(blob_files(data_dir)) == {blake3_hex(good), blake3_hex(b"undeclared")}


@pytest.mark.parametrize(
    "part",
    [
        file_part(SMALL, **{"Content-Digest": "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"}),
        file_part(SMALL, **{"Content-Digest": "blake3=xyz"}),
        file_part(SMALL, **{"Content-Digest": "blake3=:c2hvcnQ=:"}),
    ],
    ids=["other-algorithm", "not-hex", "short-base64"],
)
async def test_unusable_content_digest_is_400(client: Client, data_dir: Path, part: MultipartPart) -> None:
    response = await client.post("/ingest", data=multipart(part), headers=multipart_headers())
    await assert_error(response, 400, "malformed_multipart")
    assert blob_files(data_dir) == {}
    assert spool_files(data_dir) == []


async def test_bad_digest_field_is_400(client: Client, data_dir: Path) -> None:
    body = multipart(field_part("files.blake3", "nope"), file_part(SMALL))
    await assert_error(await client.post("/ingest", data=body, headers=multipart_headers()), 400, "malformed_multipart")
    assert blob_files(data_dir) == {}


async def test_a_digest_field_applies_to_the_next_file_only(client: Client, data_dir: Path) -> None:
    first, second, third = b"first file", b"second file", b"third file"
    status, body = await ingest_raw(
        client,
        multipart(
            field_part("files.blake3", blake3_hex(first)),
            file_part(first, "1.txt"),
            field_part("files.blake3", blake3_hex(b"not the second")),
            file_part(second, "2.txt"),
            file_part(third, "3.txt"),  # the declaration was used up by 2.txt
        ),
    )
    assert status == 207
    results = body["results"]
    assert [r["status"] for r in results] == ["stored", "error", "stored"]
    assert results[1]["error"]["code"] == "digest_mismatch"
    assert set(blob_files(data_dir)) == {blake3_hex(first), blake3_hex(third)}


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"hashes": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"])
async def test_missing_deeply_nested_body_is_400(client: Client, data_dir: Path, body: bytes) -> None:
    response = await client.post("/blobs/missing", data=body, headers={"Content-Type": "application/json"})
    await assert_error(response, 400, "invalid_body")
    assert blob_files(data_dir) == {}
    assert (await client.post("/blobs/missing", json={"hashes": []})).status == 200
