"""End-to-end smoke test of POST /ingest through a real socket."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Client, blake3_hex, blob_files, form, spool_files
from tests.samples import make_sample


async def test_single_file_is_stored_under_its_hash(client: Client, data_dir: Path) -> None:
    _, payload = make_sample("png", 1)
    response = await client.post("/ingest", data=form([("cat.png", payload)]))
    assert response.status == 200
    body = await response.json()
    result = body["results"][0]
    assert result["status"] == "stored"
    assert result["hash"] == blake3_hex(payload)
    assert result["mime"] == "image/png"
    assert result["category"] == "images/png"
    assert blob_files(data_dir)[result["hash"]].read_bytes() == payload
    assert spool_files(data_dir) == []
