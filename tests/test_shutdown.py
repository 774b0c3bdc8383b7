"""Graceful shutdown: SIGTERM mid-batch lets the request finish; on SIGINT a stalled one is cut off at the timeout."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.helpers import spool_files
from tests.server_process import (
    RhinoBoxProcess,
    blob_problems,
    catalog_rows,
    generated_digest,
    stream_multipart,
)

BOUNDARY = "rhinobox-shutdown-test"
MiB = 1024 * 1024


def refuses_connections(url: str) -> bool:
    """True once nothing listens on the server's port any more (a slow or timed-out connect is not that)."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


async def test_sigterm_mid_batch_finishes_the_request_then_exits(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # Large files go through spool files and workers; small ones through arenas: both are in flight.
    files = [(f"f{i}.bin", i, (3 * MiB if i % 3 == 0 else 40_000 + i)) for i in range(24)]
    server = RhinoBoxProcess(data_dir).start()
    proc = server.proc
    assert proc is not None
    signalled = asyncio.Event()

    async def after_file(index: int) -> None:
        if index == 8:
            proc.send_signal(signal.SIGTERM)
            for _ in range(100):  # the listening socket closes while this request is still streaming
                if await asyncio.to_thread(refuses_connections, server.url):
                    break
                await asyncio.sleep(0.05)
            signalled.set()

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                server.url + "/ingest",
                data=stream_multipart(BOUNDARY, files, after_file),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            ) as response,
        ):
            status, body = response.status, await response.json()
        assert signalled.is_set()
        assert refuses_connections(server.url)
        assert proc.wait(timeout=30) == 0
    finally:
        server.stop(signal.SIGKILL)
    assert status == 200, body
    # The catalog was closed cleanly: the last connection checkpointed the WAL and removed it.
    assert not (data_dir / "catalog.sqlite3-wal").exists()
    answered = {r["hash"]: r["size"] for r in body["results"]}
    assert [r["status"] for r in body["results"]] == ["stored"] * len(files)
    assert answered == {generated_digest(seed, size): size for _, seed, size in files}
    assert catalog_rows(data_dir) == answered
    assert blob_problems(data_dir, answered) == []
    assert spool_files(data_dir) == []
    log = [json.loads(line) for line in server.log_path.read_text().splitlines()]
    assert any(line["msg"].startswith("shutdown complete") for line in log)


async def test_stalled_upload_is_cut_off_at_the_shutdown_timeout_and_leaves_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = RhinoBoxProcess(data_dir, RHINOBOX_SHUTDOWN_TIMEOUT="1").start()
    assert server.proc is not None
    files = [("done.bin", 1, 2 * MiB), ("stalls.bin", 2, 4 * MiB)]
    stall = asyncio.Event()

    async def body() -> object:
        sent = 0
        async for chunk in stream_multipart(BOUNDARY, files):
            yield chunk
            sent += len(chunk)
            if sent > 4 * MiB:  # the first file whole, half of the second: then nothing more
                stall.set()
                await asyncio.sleep(60)

    async def upload() -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                server.url + "/ingest",
                data=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            ) as response,
        ):
            return response.status

    task = asyncio.create_task(upload())
    try:
        await asyncio.wait_for(stall.wait(), 30)
        await asyncio.sleep(0.3)  # let the server write what it received
        server.proc.send_signal(signal.SIGINT)  # Ctrl-C is handled like SIGTERM
        exit_status = await asyncio.to_thread(server.proc.wait, 30)
    except subprocess.TimeoutExpired:
        exit_status = None
    finally:
        task.cancel()
        server.stop(signal.SIGKILL)
    assert exit_status == 0, "the server did not stop after its shutdown timeout"
    messages = [json.loads(line)["msg"] for line in server.log_path.read_text().splitlines()]
    assert "shutdown timeout: cancelled 1 request(s) still running" in messages
    # The request never completed: nothing of it is recorded, and no spool file is left half written.
    assert spool_files(data_dir) == []
    assert catalog_rows(data_dir) == {}
    assert generated_digest(2, 4 * MiB) not in {p.name for p in (data_dir / "blobs").rglob("*") if p.is_file()}
