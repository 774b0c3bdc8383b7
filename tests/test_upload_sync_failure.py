"""A resumable upload whose sync fails goes back to its last durable offset, and a tus client finishes it from there.

A real server under `fiu-run -x` with RHINOBOX_FSYNC=always (each PATCH ends with fdatasync); `fiu-ctrl`
makes fdatasync fail with EIO for one of tuspy's PATCHes. That PATCH gets a JSON `storage_error`, the
partial file is cut back, and HEAD reports the offset the PATCH before made durable, not the bytes the
failed one wrote. Faults off, tuspy resumes from the upload's URL: the stored blob hashes to the file
and reads back byte for byte, `rhinobox verify` is clean, and nothing is left in uploads/ or the spool.
A record's temporary file that a failed unlink left goes at the next start (tests/test_faults.py restarts
at once, sooner than the age at which a temporary file counts as abandoned).
"""

from __future__ import annotations

import asyncio
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

from rhinobox.ingest.upload_records import UploadDirectory
from tests.helpers import blake3_hex
from tests.server_process import RhinoBoxProcess, run_cli
from tests.test_faults import FIU_CTRL, FIU_RUN, leftovers

MIB: Final = 1024 * 1024
SIZE: Final = 3 * MIB + 17  # three chunks and a short one
SYNC_POINT: Final = "posix/io/sync/fdatasync"


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


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "upload-checksum"])
async def test_a_failed_sync_goes_back_to_the_durable_offset_and_the_upload_resumes(
    tmp_path: Path, checksum: bool
) -> None:
    assert FIU_RUN is not None, "the test command installs fiu-utils (scripts/test-packages.txt)"
    data = random.Random(20).randbytes(SIZE)
    path = tmp_path / "film.bin"
    path.write_bytes(data)
    data_dir, prefix = tmp_path / "data", tmp_path / "fiu"
    server = RhinoBoxProcess(data_dir, wrapper=[FIU_RUN, "-x", "-f", str(prefix)], RHINOBOX_FSYNC="always").start()
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
    verified = await asyncio.to_thread(run_cli, "verify", "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not part.exists()
    assert leftovers(data_dir) == []


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
