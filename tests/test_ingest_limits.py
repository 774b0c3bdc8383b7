"""Limits on untrusted input and what a misbehaving client can hold: fields, parts, stalls, cancels."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
import pytest

from rhinobox.app import create_app
from rhinobox.http.keys import PIPELINE
from rhinobox.ingest.pool import WorkerPool
from rhinobox.ingest.receive import MAX_FIELDS_TOTAL_BYTES
from tests.helpers import (
    AiohttpClient,
    Client,
    assert_error,
    blake3_hex,
    blob_files,
    field_part,
    file_part,
    form,
    make_settings,
    multipart,
    multipart_headers,
    send_partial_upload,
    spool_files,
    wait_until,
)
from tests.samples import make_sample
from tests.server_process import RhinoBoxProcess, run_cli, server_env


async def test_unknown_text_fields_are_not_kept_and_all_fields_are_capped(client: Client, data_dir: Path) -> None:
    data = aiohttp.FormData()
    for i in range(15):
        data.add_field(f"junk{i}", "x" * 60_000)
    data.add_field("file", make_sample("png", 1)[1], filename="a.png")
    ok = await client.post("/ingest", data=data)
    assert ok.status == 200
    data = aiohttp.FormData()
    for i in range(20):
        data.add_field(f"junk{i}", "x" * 60_000)
    data.add_field("file", make_sample("png", 2)[1], filename="b.png")
    await assert_error(await client.post("/ingest", data=data), 413, "field_too_large")
    assert blake3_hex(make_sample("png", 2)[1]) not in blob_files(data_dir)


async def test_a_flood_of_extra_parts_fails_the_request_and_stores_nothing(
    aiohttp_client: AiohttpClient, data_dir: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, max_files_per_request="2")))
    files = [make_sample("text", i) for i in range(2 + 1000 + 1)]
    await assert_error(await client.post("/ingest", data=form(files)), 413, "too_many_files")
    assert blob_files(data_dir) == {}
    assert spool_files(data_dir) == []


async def test_declared_digest_field_applies_to_the_next_file_only(client: Client) -> None:
    first, second = make_sample("png", 1), make_sample("pdf", 1)
    data = aiohttp.FormData()
    data.add_field("files.blake3", blake3_hex(first[1]))
    data.add_field("files", first[1], filename=first[0])
    data.add_field("files", second[1], filename=second[0])
    response = await client.post("/ingest", data=data)
    assert response.status == 200
    assert [r["status"] for r in (await response.json())["results"]] == ["stored", "stored"]


async def test_hostile_filename_charset_is_harmless(client: Client) -> None:
    disposition = "form-data; name=\"f\"; filename*=raw_unicode_escape''%5Cud800.png"
    body = multipart(({"Content-Disposition": disposition}, make_sample("png", 4)[1]))
    response = await client.post("/ingest", data=body, headers=multipart_headers())
    assert response.status == 200


async def test_a_stalled_client_is_cut_off_and_releases_everything(
    aiohttp_client: AiohttpClient, data_dir: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, body_timeout="0.5")))
    arenas = client.app[PIPELINE].resources.arenas
    reader, writer = await send_partial_upload(
        client.server.host, client.server.port, [("small.bin", b"s" * 1000)], declared_length=100_000
    )
    await asyncio.sleep(0.2)
    assert arenas.available == arenas.limit - 1  # the stalled small file holds one arena
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert b" 408 " in status_line
    writer.close()
    assert arenas.available == arenas.limit
    assert spool_files(data_dir) == []
    assert blob_files(data_dir) == {}


async def test_a_large_file_holds_no_arena_while_it_streams(client: Client) -> None:
    arenas = client.app[PIPELINE].resources.arenas
    _, writer = await send_partial_upload(
        client.server.host, client.server.port, [("big.bin", b"b" * (2 * 1024 * 1024))], declared_length=9_000_000
    )
    await wait_until(lambda: spool_files(client.app[PIPELINE].resources.store.spool_dir.parent), 2.5)
    assert arenas.available == arenas.limit
    writer.close()


async def test_cancelled_waiter_does_not_free_slots_before_the_thread_ends() -> None:
    pool = WorkerPool(workers=1, capacity=4)
    release = threading.Event()
    try:
        task = asyncio.ensure_future(pool.run(4, release.wait))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.queued == 4  # the thread still runs: its slots are still taken
        release.set()
        await wait_until(lambda: pool.queued == 0, 1.0)
        assert pool.queued == 0
    finally:
        release.set()
        pool.close()


def test_a_second_server_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with RhinoBoxProcess(data_dir):
        (data_dir / "tmp" / "live-upload.spool").write_bytes(b"in flight")
        second = run_cli("serve", env=server_env(data_dir))
        assert second.returncode == 1
        assert "another RhinoBox process" in second.stderr
        assert (data_dir / "tmp" / "live-upload.spool").exists()


async def test_non_latin1_content_type_is_a_4xx_json_error(client: Client, data_dir: Path) -> None:
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    body = b"--x\r\n"
    writer.write(
        b"POST /ingest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=\xe2\x82\xac\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10.0)
    writer.close()
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), response[:300]
    assert b'"code": "internal"' not in response
    assert spool_files(data_dir) == []


async def test_kept_field_names_count_toward_the_text_field_limit(client: Client, data_dir: Path) -> None:
    """Every distinct `<x>.blake3` field is kept in the session's `_fields` until the request ends, whatever
    its value size: empty values with long names hold ~1 byte of memory per body byte, unbounded."""
    name_len = 7000
    count = MAX_FIELDS_TOTAL_BYTES // name_len + 20  # names alone well over the 1 MiB text-field budget
    fields = [field_part(f"{i:06d}{'n' * name_len}.blake3", "") for i in range(count)]
    body = multipart(*fields, file_part(b"payload", "a.bin"))
    response = await client.post("/ingest", data=body, headers=multipart_headers())
    await assert_error(response, 413, "field_too_large")
    assert spool_files(data_dir) == []
    assert blob_files(data_dir) == {}
