"""Start-up: spool files from a crash are removed; orphans and missing blobs are counted in /healthz.

With auth on, the open /healthz gives only the counts; the hashes need a token.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from rhinobox import __version__
from rhinobox.app import create_app
from tests.conftest import AiohttpClient, make_settings
from tests.helpers import blake3_hex, blob_files, form, spool_files
from tests.samples import make_sample

Client = TestClient[web.Request, web.Application]


async def reconciled(client: Client, headers: dict[str, str] | None = None) -> dict[str, Any]:
    for _ in range(200):
        body = await (await client.get("/healthz", headers=headers)).json()
        if body["reconcile"]["state"] == "done":
            return dict(body)
        await asyncio.sleep(0.02)
    raise AssertionError("reconciliation did not finish")


async def test_healthz_reports_version_and_a_clean_store(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    body = await reconciled(client)
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["reconcile"]["orphan_blobs"] == 0
    assert body["reconcile"]["missing_blobs"] == 0


async def test_restart_cleans_spool_and_reports_inconsistencies(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    files = [make_sample("png", 1), make_sample("pdf", 2)]
    assert (await first.post("/ingest", data=form(files))).status == 200
    await first.close()

    # What a crash can leave: a spool file, a blob renamed in but never recorded, a record whose blob went away.
    (data_dir / "tmp" / "deadbeef.spool").write_bytes(b"half an upload")
    orphan = b"renamed but never recorded"
    orphan_digest = blake3_hex(orphan)
    (data_dir / "blobs" / orphan_digest[:2] / orphan_digest).write_bytes(orphan)
    lost_digest = blake3_hex(files[1][1])
    blob_files(data_dir)[lost_digest].unlink()

    second = await aiohttp_client(create_app(make_settings(data_dir)))
    body = await reconciled(second)
    assert spool_files(data_dir) == []
    assert body["reconcile"]["stale_spool_files"] == 1
    assert body["reconcile"]["orphan_blobs"] == 1
    assert body["reconcile"]["orphan_sample"] == [orphan_digest]
    assert body["reconcile"]["missing_blobs"] == 1
    assert body["reconcile"]["missing_sample"] == [lost_digest]

    # Uploading the lost content again heals it: the blob is stored anew.
    again = await second.post("/ingest", data=form([files[1]]))
    assert (await again.json())["results"][0]["status"] == "stored"
    assert blob_files(data_dir)[lost_digest].read_bytes() == files[1][1]


async def test_healthz_shows_hashes_only_with_a_token_when_auth_is_on(
    aiohttp_client: AiohttpClient, data_dir: Path
) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    assert (await first.post("/ingest", data=form([make_sample("png", 1)]))).status == 200
    await first.close()
    orphan = b"renamed but never recorded"
    orphan_digest = blake3_hex(orphan)
    (data_dir / "blobs" / orphan_digest[:2] / orphan_digest).write_bytes(orphan)

    secured = await aiohttp_client(create_app(make_settings(data_dir, api_tokens="s3cret:ro")))
    anonymous = await reconciled(secured)
    assert anonymous["status"] == "ok"
    assert anonymous["reconcile"]["orphan_blobs"] == 1
    assert "orphan_sample" not in anonymous["reconcile"]
    assert "missing_sample" not in anonymous["reconcile"]
    assert orphan_digest not in str(anonymous)
    wrong = await reconciled(secured, {"Authorization": "Bearer wrong"})
    assert "orphan_sample" not in wrong["reconcile"]
    authorized = await reconciled(secured, {"Authorization": "Bearer s3cret"})
    assert authorized["reconcile"]["orphan_sample"] == [orphan_digest]
    assert authorized["reconcile"]["missing_sample"] == []
