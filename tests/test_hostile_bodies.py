"""Bodies that lie or amplify: compressed uploads, bad encodings, huge JSON numbers, blobs lost from disk."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import pytest

from tests.helpers import (
    Client,
    assert_error,
    blake3_hex,
    blob_files,
    file_part,
    get_stats,
    ingest_one,
    multipart,
    multipart_headers,
    spool_files,
)

# One MiB of zeros squeezes into about a KiB: what a decompression bomb looks like, kept small.
BOMB_PLAIN = b"\0" * (1024 * 1024)
GZIP_BOMB = gzip.compress(BOMB_PLAIN)
DEFLATE_BOMB = zlib.compress(BOMB_PLAIN)
NOT_GZIP = b"this body is plain text that claims to be gzip"
BAD_CRC = GZIP_BOMB[:-8] + b"\0\0\0\0" + GZIP_BOMB[-4:]


def store_is_empty(data_dir: Path) -> bool:
    return not blob_files(data_dir) and not spool_files(data_dir)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-gzip", "GZIP"])
@pytest.mark.parametrize("body", [GZIP_BOMB, DEFLATE_BOMB, NOT_GZIP, BAD_CRC, GZIP_BOMB + b"trailing garbage"])
async def test_compressed_or_mislabelled_ingest_bodies_are_refused_with_415(
    client: Client, data_dir: Path, encoding: str, body: bytes
) -> None:
    framed = multipart(file_part(body, "bomb.bin"))
    headers = {**multipart_headers(), "Content-Encoding": encoding}
    for path in ("/ingest", "/ingest?async=true", "/ingest/media"):
        response = await client.post(path, data=framed, headers=headers)
        await assert_error(response, 415, "unsupported_encoding")
    assert store_is_empty(data_dir)
    stats = await get_stats(client)
    assert (stats["blobs"], stats["uploads"]) == (0, 0)


@pytest.mark.parametrize("body", [GZIP_BOMB, NOT_GZIP, BAD_CRC])
async def test_compressed_bodies_are_refused_on_every_body_endpoint(
    client: Client, data_dir: Path, body: bytes
) -> None:
    digest = blake3_hex(BOMB_PLAIN)
    headers = {"Content-Encoding": "gzip"}
    await assert_error(await client.put(f"/blobs/{digest}", data=body, headers=headers), 415, "unsupported_encoding")
    await assert_error(await client.post("/blobs/missing", data=body, headers=headers), 415, "unsupported_encoding")
    await assert_error(await client.put("/categories", data=body, headers=headers), 415, "unsupported_encoding")
    assert store_is_empty(data_dir)


async def test_a_compressed_put_of_a_known_blob_is_refused_too(client: Client) -> None:
    """The known-blob shortcut never reads the body; it still refuses to pretend it accepted an encoded one."""
    result = await ingest_one(client, "zeros.bin", BOMB_PLAIN)
    response = await client.put(f"/blobs/{result['hash']}", data=GZIP_BOMB, headers={"Content-Encoding": "gzip"})
    await assert_error(response, 415, "unsupported_encoding")


async def test_identity_encoding_is_accepted(client: Client) -> None:
    framed = multipart(file_part(b"plain bytes", "a.txt"))
    response = await client.post(
        "/ingest", data=framed, headers={**multipart_headers(), "Content-Encoding": "identity"}
    )
    assert response.status == 200, await response.text()


async def test_refusals_log_no_traceback(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        framed = multipart(file_part(NOT_GZIP, "x.bin"))
        response = await client.post(
            "/ingest", data=framed, headers={**multipart_headers(), "Content-Encoding": "gzip"}
        )
        await assert_error(response, 415, "unsupported_encoding")
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("digits", [4301, 10_000, 100_000])
async def test_a_json_number_past_the_int_digit_limit_is_a_400(client: Client, digits: int) -> None:
    number = "9" * digits
    response = await client.post("/blobs/missing", data=f'{{"hashes": [], "n": {number}}}')
    await assert_error(response, 400, "invalid_body")
    response = await client.put("/categories", data=f'{{"rules": {number}}}')
    await assert_error(response, 400, "invalid_rules")


async def test_a_blob_lost_from_disk_is_reported_missing_and_a_put_repairs_it(client: Client, data_dir: Path) -> None:
    payload = b"content that the disk will lose" * 100
    kept = await ingest_one(client, "kept.bin", b"content that stays" * 100)
    lost = await ingest_one(client, "lost.bin", payload)
    blob_files(data_dir)[lost["hash"]].unlink()
    response = await client.post("/blobs/missing", json={"hashes": [kept["hash"], lost["hash"], lost["hash"]]})
    assert response.status == 200
    assert (await response.json())["missing"] == [lost["hash"]]
    response = await client.put(f"/blobs/{lost['hash']}", data=payload)
    assert response.status == 201, await response.text()
    assert blob_files(data_dir)[lost["hash"]].read_bytes() == payload
    response = await client.post("/blobs/missing", json={"hashes": [kept["hash"], lost["hash"]]})
    assert (await response.json())["missing"] == []
