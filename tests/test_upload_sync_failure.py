"""A resumable upload whose sync fails goes back to its last durable offset, and a tus client finishes it from there.

A real server under `fiu-run -x` with RHINOBOX_FSYNC=always (each PATCH ends with fdatasync); `fiu-ctrl`
makes fdatasync fail with EIO for one of tuspy's PATCHes. That PATCH gets a JSON `storage_error`, the
partial file is cut back, and HEAD reports the offset the PATCH before made durable, not the bytes the
failed one wrote. Faults off, tuspy resumes from the upload's URL: the stored blob hashes to the file
and reads back byte for byte, `rhinobox verify` is clean, and nothing is left in uploads/ or the spool.
A record's temporary file that a failed unlink left goes at the next start (tests/test_faults.py restarts
at once, sooner than the age at which a temporary file counts as abandoned).

The bytes a cut-off PATCH brought are kept, and synced before the upload is let go: when that sync fails
they are cut back too, so a later failed PATCH cannot leave unsynced bytes counted. And a completion whose
hash did not consume exactly the partial file's bytes hashes the file again rather than commit under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from yarl import URL

from rhinobox.errors import StorageError
from rhinobox.http.keys import PIPELINE, UPLOADS
from rhinobox.http.results import file_result
from rhinobox.ingest.upload_append import UploadProgress
from rhinobox.ingest.upload_complete import complete_upload
from rhinobox.ingest.upload_records import UploadDirectory
from tests.helpers import Client, blake3_hex, wait_until
from tests.server_process import RhinoBoxProcess, run_cli
from tests.test_faults import FIU_CTRL, FIU_RUN, leftovers

MIB: Final = 1024 * 1024
SIZE: Final = 3 * MIB + 17  # three chunks and a short one
SYNC_POINT: Final = "posix/io/sync/fdatasync"
TUS: Final = {"Tus-Resumable": "1.0.0"}
CHUNK: Final = {**TUS, "Content-Type": "application/offset+octet-stream"}
CUT: Final = MIB // 2 + 5  # the bytes a cut-off PATCH sends before its client hangs up


def fiu_ctrl(prefix: Path, pid: int, command: str) -> None:
    """One libfiu command to the server process started under `fiu-run -x -f PREFIX`."""
    assert FIU_CTRL is not None, "the test command installs fiu-utils (scripts/test-packages.txt)"
    done = subprocess.run(
        [FIU_CTRL, "-f", str(prefix), "-c", command, str(pid)], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def read_back(url: str, upload_url: str) -> tuple[dict[str, Any], bytes]:
    """The upload's state (`GET /uploads/{id}`) and the bytes of the file it stored."""
    async with aiohttp.ClientSession() as session:
        async with session.get(upload_url) as response:
            assert response.status == 200
            state: dict[str, Any] = await response.json()
        assert state["result"] is not None, state
        async with session.get(f"{url}/files/{state['result']['hash']}") as response:
            assert response.status == 200
            return state, await response.read()


def answered(log_path: Path, request_id: str) -> bool:
    """Whether the server's access log has the line of `request_id` (written once its handler has returned)."""
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("request_id") == request_id:
                return True
    return False


async def patch_cut_off(server: RhinoBoxProcess, location: str, offset: int, sent: bytes, declared: int) -> None:
    """A PATCH that declares `declared` body bytes, sends `sent` and hangs up; returns once the server is done
    with it (its access log line), so the request has let go of the upload and HEAD is settled."""
    url, request_id = URL(server.url), f"cut-{offset}"
    _, writer = await asyncio.open_connection(url.host, url.port)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
        f"Content-Length: {declared}\r\nX-Request-ID: {request_id}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    assert await wait_until(lambda: answered(server.log_path, request_id), timeout=10)


def start_under_libfiu(tmp_path: Path, seed: int) -> tuple[bytes, Path, Path, Path, RhinoBoxProcess]:
    """A film to upload (its bytes and path), and a server (fsync=always) under fiu-run: data dir, fiu prefix."""
    assert FIU_RUN is not None, "the test command installs fiu-utils (scripts/test-packages.txt)"
    data = random.Random(seed).randbytes(SIZE)
    path = tmp_path / "film.bin"
    path.write_bytes(data)
    data_dir, prefix = tmp_path / "data", tmp_path / "fiu"
    server = RhinoBoxProcess(data_dir, wrapper=[FIU_RUN, "-x", "-f", str(prefix)], RHINOBOX_FSYNC="always").start()
    return data, path, data_dir, prefix, server


async def head_offset(session: aiohttp.ClientSession, upload_url: str) -> int:
    """The offset a tus client resumes from (HEAD's `Upload-Offset`)."""
    async with session.head(upload_url, headers=TUS) as response:
        assert response.status == 200
        return int(response.headers["Upload-Offset"])


async def assert_store_whole(data_dir: Path, part: Path) -> None:
    """After the server stopped: `rhinobox verify` passes, the partial file and every leftover are gone."""
    verified = await asyncio.to_thread(run_cli, "verify", "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not part.exists()
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "upload-checksum"])
async def test_a_failed_sync_goes_back_to_the_durable_offset_and_the_upload_resumes(
    tmp_path: Path, checksum: bool
) -> None:
    data, path, data_dir, prefix, server = start_under_libfiu(tmp_path, seed=20)
    try:
        assert server.proc is not None
        client = tus_client.TusClient(f"{server.url}/uploads/")
        uploader = client.uploader(
            file_path=str(path), chunk_size=MIB, metadata={"filename": "film.bin"}, upload_checksum=checksum
        )
        await asyncio.to_thread(uploader.upload_chunk)  # creation, then the first MiB: synced
        assert uploader.offset == MIB
        fiu_ctrl(prefix, server.proc.pid, f"enable name={SYNC_POINT},failinfo={errno.EIO}")
        try:
            with pytest.raises(TusCommunicationError) as failed:
                await asyncio.to_thread(uploader.upload_chunk)  # the second MiB is written, its sync fails
        finally:
            fiu_ctrl(prefix, server.proc.pid, f"disable name={SYNC_POINT}")
        assert failed.value.status_code == 500
        assert json.loads(failed.value.response_content)["error"]["code"] == "storage_error"

        assert uploader.url is not None
        part = data_dir / "uploads" / f"{uploader.url.rsplit('/', 1)[1]}.part"
        assert part.stat().st_size == MIB  # cut back: the failed PATCH's bytes are gone from the file
        # The rest in one PATCH: a hash that still counted the failed PATCH's bytes would not line up again.
        resumed = client.uploader(file_path=str(path), chunk_size=SIZE, url=uploader.url, upload_checksum=checksum)
        assert resumed.offset == MIB  # its HEAD: the last durable offset, not the bytes of the failed PATCH
        await asyncio.to_thread(resumed.upload)

        state, stored = await read_back(server.url, uploader.url)
        assert state["complete"] is True
        assert state["offset"] == SIZE
        assert (state["result"]["hash"], state["result"]["size"]) == (blake3_hex(data), SIZE)
        assert stored == data
    finally:
        assert server.stop() == 0
    await assert_store_whole(data_dir, part)


async def test_bytes_kept_from_a_cut_off_patch_are_synced_or_cut_back(tmp_path: Path) -> None:
    """Kept bytes count only once synced: a cut-off PATCH whose sync fails keeps nothing, nor does a failed PATCH."""
    data, path, data_dir, prefix, server = start_under_libfiu(tmp_path, seed=22)
    try:
        assert server.proc is not None
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}/uploads/", headers={**TUS, "Upload-Length": str(SIZE)}) as created:
                assert created.status == 201
                location = created.headers["Location"]
            upload_url = f"{server.url}{location}"
            part = data_dir / "uploads" / f"{location.rsplit('/', 1)[1]}.part"
            async with session.patch(upload_url, data=data[:MIB], headers={**CHUNK, "Upload-Offset": "0"}) as first:
                assert first.status == 204

            await patch_cut_off(server, location, MIB, data[MIB : MIB + CUT], SIZE - MIB)
            kept = MIB + CUT
            assert await head_offset(session, upload_url) == kept  # what arrived stays (and was synced)

            fiu_ctrl(prefix, server.proc.pid, f"enable name={SYNC_POINT},failinfo={errno.EIO}")
            try:
                await patch_cut_off(server, location, kept, data[kept : kept + CUT], SIZE - kept)
                # Its sync failed: its bytes may not be on disk, so they are not counted.
                assert await head_offset(session, upload_url) == kept
                assert part.stat().st_size == kept
                headers = {**CHUNK, "Upload-Offset": str(kept)}
                async with session.patch(upload_url, data=data[kept : kept + MIB], headers=headers) as failed:
                    assert failed.status == 500
                    assert (await failed.json())["error"]["code"] == "storage_error"
            finally:
                fiu_ctrl(prefix, server.proc.pid, f"disable name={SYNC_POINT}")
            assert await head_offset(session, upload_url) == kept
            assert part.stat().st_size == kept

        client = tus_client.TusClient(f"{server.url}/uploads/")
        resumed = client.uploader(file_path=str(path), chunk_size=SIZE, url=upload_url)
        assert resumed.offset == kept
        await asyncio.to_thread(resumed.upload)
        state, stored = await read_back(server.url, upload_url)
        assert (state["result"]["hash"], state["result"]["size"]) == (blake3_hex(data), SIZE)
        assert stored == data
    finally:
        assert server.stop() == 0
    await assert_store_whole(data_dir, part)


@pytest.mark.parametrize("fed", ["behind", "ahead"])
async def test_a_completion_whose_hash_missed_bytes_hashes_the_partial_file_again(client: Client, fed: str) -> None:
    """The counter of hashed bytes is off (behind: bytes written unhashed; ahead: hashed bytes the file lacks)."""
    uploads, resources = client.app[UPLOADS], client.app[PIPELINE].resources
    data = random.Random(23).randbytes(MIB + 3)
    record = (await uploads.create(len(data), {"filename": "notes.bin"}, None)).record
    Path(uploads.directory.part_path(record.id)).write_bytes(data)
    progress = UploadProgress()
    progress.feed([data[: MIB // 2]] if fed == "behind" else [data, b"!"])

    await complete_upload(resources, uploads.directory, record, progress, file_result)

    response = await client.get(f"/uploads/{record.id}")
    result = (await response.json())["result"]
    assert (result["hash"], result["size"]) == (blake3_hex(data), len(data))
    stored = await client.get(f"/files/{result['hash']}")
    assert await stored.read() == data


async def test_a_completion_whose_partial_file_has_another_size_stores_nothing(client: Client) -> None:
    """A partial file one byte short of the upload's length: storage_error, no blob, the upload starts over."""
    uploads, resources = client.app[UPLOADS], client.app[PIPELINE].resources
    data = random.Random(24).randbytes(MIB + 3)
    record = (await uploads.create(len(data), {"filename": "notes.bin"}, None)).record
    Path(uploads.directory.part_path(record.id)).write_bytes(data[:-1])
    progress = UploadProgress()
    progress.feed([data[:-1]])

    with pytest.raises(StorageError):
        await complete_upload(resources, uploads.directory, record, progress, file_result)

    for digest in (blake3_hex(data), blake3_hex(data[:-1])):
        assert (await client.get(f"/files/{digest}")).status == 404
    state = await (await client.get(f"/uploads/{record.id}")).json()
    assert (state["offset"], state["result"], state["error"]) == (0, None, None)


def test_the_start_removes_record_writes_whose_process_is_gone(tmp_path: Path) -> None:
    """A failed unlink leaves a record's temporary file; the next start removes it, not a live sibling's."""
    directory = UploadDirectory(tmp_path, durable=False)
    directory.open()
    writer = subprocess.Popen(["true"])
    writer.wait()  # its pid runs no more (pids are not reused this soon)
    gone = directory.path / f"{'a' * 32}.json.{writer.pid}.tmp"
    sibling = directory.path / f"{'b' * 32}.json.{os.getppid()}.tmp"  # a process that runs: in flight
    gone.write_bytes(b"{}")
    sibling.write_bytes(b"{}")
    directory.open()
    assert not gone.exists()
    assert sibling.exists()
