"""DELETE racing an upload of the same content, many times, through the real app on a real socket.

Invariant: afterwards, a catalog entry always has its blob with the right bytes, and an upload that
answered `stored`/`duplicate` and whose record survives has its blob. Exactly one of two histories
may happen: the delete ran first (the upload stores the blob again) or the upload ran first (the
delete removes it with the upload's record).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from rhinobox.app import create_app
from tests.helpers import AiohttpClient, Client, blake3_hex, blob_files, form, get_stats, make_settings, spool_files

T = TypeVar("T")
DELAY_STEPS = 6  # upload/delete start offsets, in 0.5 ms steps

PATHS = {
    "ingest-small": 8 * 1024,  # hashed in an arena on the loop
    "ingest-large": 320 * 1024,  # streamed through a spool file
    "put": 64 * 1024,  # PUT /blobs/{hash}: dedup without the body, or a raw body
}


async def upload(client: Client, path: str, payload: bytes, name: str) -> tuple[int, str]:
    digest = blake3_hex(payload)
    if path == "put":
        response = await client.put(f"/blobs/{digest}", data=payload, headers={"X-Filename": name})
        body = await response.json()
        return response.status, body["status"]
    response = await client.post("/ingest", data=form([(name, payload)]))
    body = await response.json()
    return response.status, body["results"][0]["status"]


async def after(delay: float, coro: Awaitable[T]) -> T:
    await asyncio.sleep(delay)
    return await coro


async def race_round(
    client: Client, data_dir: Path, path: str, payload: bytes, round_no: int, rng: random.Random
) -> str:
    digest = blake3_hex(payload)
    status, outcome = await upload(client, path, payload, f"seed-{round_no}")
    assert (status, outcome) in ((200, "stored"), (201, "stored"), (200, "duplicate"))
    racer = f"racer-{round_no}"
    upload_delay, delete_delay = (rng.randrange(DELAY_STEPS) / 2000 for _ in range(2))
    uploaded, deleted = await asyncio.gather(
        after(upload_delay, upload(client, path, payload, racer)),
        after(delete_delay, client.delete(f"/files/{digest}")),
    )
    up_status, up_outcome = uploaded
    assert deleted.status == 204
    assert up_outcome in ("stored", "duplicate")
    assert up_status in (200, 201)

    meta = await client.get(f"/files/{digest}/meta")
    on_disk = blob_files(data_dir).get(digest)
    if meta.status == 200:
        # The delete ran first: the upload stored the content again, and only its record is left.
        names = [u["name"] for u in (await meta.json())["uploads"]]
        assert names == [racer]
        assert up_outcome == "stored"
        assert on_disk is not None
        assert on_disk.read_bytes() == payload
        download = await client.get(f"/files/{digest}")
        assert download.status == 200
        assert await download.read() == payload
        history = "delete-first"
    else:
        # The upload ran first: the delete saw its record and removed it with the blob.
        assert meta.status == 404
        assert on_disk is None, "blob left without a catalog entry"
        history = "upload-first"
    assert spool_files(data_dir) == []
    return history


@pytest.mark.parametrize(("fsync", "rounds"), [("never", 150), ("always", 25)])
@pytest.mark.parametrize("path", list(PATHS))
async def test_delete_racing_upload_keeps_the_invariant(
    aiohttp_client: AiohttpClient, data_dir: Path, path: str, fsync: str, rounds: int
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, fsync=fsync)))
    rng = random.Random(f"{path}-{fsync}")
    payload = rng.randbytes(PATHS[path])
    histories = Counter(
        [await race_round(client, data_dir, path, payload, round_no, rng) for round_no in range(rounds)]
    )
    assert sum(histories.values()) == rounds
    # Whatever the interleaving, the catalog and the disk agree at the end.
    stats = await get_stats(client)
    assert stats["blobs"] == len(blob_files(data_dir))
    if fsync == "never":
        assert set(histories) == {"delete-first", "upload-first"}, histories  # both orders were exercised
