"""GET /stats: counts, bytes, dedup savings and categories, kept right through uploads and deletes."""

from __future__ import annotations

from tests.helpers import Client, blake3_hex, form, get_stats
from tests.samples import make_sample


async def test_empty_store(client: Client) -> None:
    assert await get_stats(client) == {
        "blobs": 0,
        "bytes_stored": 0,
        "uploads": 0,
        "bytes_uploaded": 0,
        "bytes_saved": 0,
        "categories": {},
        "resumable": {"open": 0, "open_bytes": 0},
    }


async def test_stats_count_dedup_and_follow_deletes(client: Client) -> None:
    _, png = make_sample("png", 1)
    _, pdf = make_sample("pdf", 2)
    _, text = make_sample("text", 3)
    batch = [("a.png", png), ("b.png", png), ("c.pdf", pdf), ("d.txt", text)]
    assert (await client.post("/ingest", data=form(batch))).status == 200
    assert (await client.put(f"/blobs/{blake3_hex(png)}", data=b"")).status == 200  # a third png upload
    stats = await get_stats(client)
    stored = len(png) + len(pdf) + len(text)
    assert stats["blobs"] == 3
    assert stats["uploads"] == 5
    assert stats["bytes_stored"] == stored
    assert stats["bytes_uploaded"] == stored + 2 * len(png)
    assert stats["bytes_saved"] == 2 * len(png)
    assert stats["categories"] == {
        "documents/pdf": {"blobs": 1, "bytes": len(pdf)},
        "documents/text": {"blobs": 1, "bytes": len(text)},
        "images/png": {"blobs": 1, "bytes": len(png)},
    }
    assert (await client.delete(f"/files/{blake3_hex(png)}")).status == 204
    after = await get_stats(client)
    assert (after["blobs"], after["uploads"], after["bytes_saved"]) == (2, 2, 0)
    assert set(after["categories"]) == {"documents/pdf", "documents/text"}
