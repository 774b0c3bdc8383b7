"""Whole-document types through the real upload path: a JSON document is JSON at any size (issue 19)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import Client, form

# Below an arena's limit (typed in memory), and above it (typed while streaming to the spool file).
SIZES = (3 * 1024, 300 * 1024, 3 * 1024 * 1024)


def json_document(size: int) -> bytes:
    records = [{"id": i, "name": f"record {i}", "ok": i % 2 == 0} for i in range(size // 40)]
    return json.dumps(records, indent=1).encode()


@pytest.mark.parametrize("size", SIZES)
async def test_json_documents_are_json_at_any_size(client: Client, size: int) -> None:
    payload = json_document(size)
    response = await client.post("/ingest", data=form([("data.bin", payload)]))
    assert response.status == 200
    (result,) = (await response.json())["results"]
    assert result["mime"] == "application/json"
    assert result["category"] == "code/json"


async def test_a_truncated_json_document_is_text(client: Client) -> None:
    payload = json_document(SIZES[0])[:-1]
    response = await client.post("/ingest", data=form([("data.json", payload)]))
    (result,) = (await response.json())["results"]
    assert result["mime"] == "text/plain"


@pytest.mark.parametrize("size", SIZES)
async def test_ndjson_is_filed_next_to_json(client: Client, size: int) -> None:
    lines = [json.dumps({"id": i, "event": "upload", "ok": True}) for i in range(size // 40)]
    payload = ("\n".join(lines) + "\n").encode()
    response = await client.post("/ingest", data=form([("events.bin", payload)]))
    (result,) = (await response.json())["results"]
    assert result["mime"] == "application/x-ndjson"
    assert result["category"] == "code/json"
