"""Resumable uploads with real clients (tuspy, tus-js-client under Node, curl) against a real server process,
and the faults they exist for: dropped connections, kill -9, many at once."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from tusclient import client as tus_client

from tests.server_process import (
    RhinoBoxProcess,
    blob_problems,
    generated_bytes,
    generated_digest,
    run_cli,
)

REPO: Final = Path(__file__).resolve().parent.parent
TUS_JS_SCRIPT: Final = REPO / "tests" / "clients" / "tus_js_upload.cjs"
TUS: Final = {"Tus-Resumable": "1.0.0"}
MIB: Final = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RhinoBoxProcess]:
    with RhinoBoxProcess(tmp_path / "data", RHINOBOX_FSYNC="always") as process:
        yield process


def write_file(path: Path, seed: int, size: int) -> Path:
    with open(path, "wb") as out:
        for offset in range(0, size, 4 * MIB):
            out.write(generated_bytes(seed, size, offset, 4 * MIB))
    return path


def blob_count(data_dir: Path) -> int:
    return sum(1 for p in (data_dir / "blobs").rglob("*") if p.is_file())


def part_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "uploads").glob("*.part"))


async def upload_state(base: str, upload_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(urllib.parse.urljoin(base, upload_url)) as response:
        assert response.status == 200
        state: dict[str, Any] = await response.json()
        return state


@pytest.mark.parametrize("checksum", [False, True])
async def test_tuspy_uploads_in_chunks(server: RhinoBoxProcess, tmp_path: Path, checksum: bool) -> None:
    size = 5 * MIB + 123
    path = write_file(tmp_path / "clip.mov", seed=1, size=size)
    uploader = tus_client.TusClient(f"{server.url}/uploads/").uploader(
        file_path=str(path), chunk_size=MIB, metadata={"filename": "clip.mov"}, upload_checksum=checksum
    )
    await asyncio.to_thread(uploader.upload)
    assert uploader.url is not None
    state = await upload_state(server.url, uploader.url)
    assert state["complete"] is True
    assert state["result"]["hash"] == generated_digest(1, size)
    assert state["result"]["name"] == "clip.mov"
    assert part_files(server.data_dir) == []


async def test_tuspy_resumes_an_upload_from_its_url(server: RhinoBoxProcess, tmp_path: Path) -> None:
    size = 3 * MIB
    path = write_file(tmp_path / "a.bin", seed=2, size=size)
    client = tus_client.TusClient(f"{server.url}/uploads/")
    first = client.uploader(file_path=str(path), chunk_size=MIB)
    await asyncio.to_thread(first.upload_chunk)  # one chunk, then the client "crashes"
    second = client.uploader(file_path=str(path), chunk_size=MIB, url=first.url)
    assert second.get_offset() == MIB
    await asyncio.to_thread(second.upload)
    assert first.url is not None
    assert (await upload_state(server.url, first.url))["result"]["hash"] == generated_digest(2, size)


@pytest.mark.parametrize(("protocol", "stop_after"), [("tus-v1", 0), ("tus-v1", MIB), ("ietf-draft-05", MIB)])
async def test_tus_js_client(server: RhinoBoxProcess, tmp_path: Path, protocol: str, stop_after: int) -> None:
    node = shutil.which("node")
    assert node is not None, "the test command installs Node.js (scripts/bootstrap.sh)"
    size = 3 * MIB + 5
    path = write_file(tmp_path / "page.bin", seed=3, size=size)
    done = await asyncio.to_thread(
        subprocess.run,
        [node, str(TUS_JS_SCRIPT), f"{server.url}/uploads/", str(path), protocol, str(MIB), str(stop_after)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["result"]["hash"] == generated_digest(3, size)
    assert answer["result"]["name"] == "page.bin"
    if stop_after:
        assert answer["resumedFrom"] >= stop_after
    state = await upload_state(server.url, answer["url"])
    assert state["metadata"]["comment"] == "tus-js-client"


def test_curl_speaks_the_raw_protocol(server: RhinoBoxProcess, tmp_path: Path) -> None:
    size = 2 * MIB
    path = write_file(tmp_path / "c.bin", seed=4, size=size)
    tus = ["-H", "Tus-Resumable: 1.0.0"]
    created = subprocess.run(
        ["curl", "-sS", "-i", "-X", "POST", f"{server.url}/uploads/", *tus, "-H", f"Upload-Length: {size}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    location = next(line.split(":", 1)[1].strip() for line in created.splitlines() if line.lower().startswith("locat"))
    chunk_type = ["-H", "Content-Type: application/offset+octet-stream"]
    patched = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "-X",
            "PATCH",
            f"{server.url}{location}",
            *tus,
            "-H",
            "Upload-Offset: 0",
            *chunk_type,
            "--data-binary",
            f"@{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "HTTP/1.1 204 No Content" in patched  # after curl's "100 Continue"
    result_line = next(line for line in patched.splitlines() if line.lower().startswith("rhinobox-result:"))
    assert json.loads(result_line.split(":", 1)[1])["hash"] == generated_digest(4, size)


def _cut_patch(base: str, upload_url: str, offset: int, data: bytes, send: int) -> None:
    """Send a PATCH announcing all of `data`, then drop the connection after `send` bytes of it."""
    parsed = urllib.parse.urlsplit(base)
    head = (
        f"PATCH {upload_url} HTTP/1.1\r\nHost: {parsed.netloc}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parsed.hostname, parsed.port)) as sock:
        sock.sendall(head)
        sock.sendall(data[:send])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST


async def _head_offset(base: str, upload_url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.head(urllib.parse.urljoin(base, upload_url), headers=TUS) as response,
    ):
        assert response.status == 200
        return int(response.headers["Upload-Offset"])


async def _create(base: str, size: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/uploads/", headers={**TUS, "Upload-Length": str(size)}) as response,
    ):
        assert response.status == 201
        return response.headers["Location"]


async def _finish(base: str, upload_url: str, offset: int, seed: int, size: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.patch(
            urllib.parse.urljoin(base, upload_url),
            data=generated_bytes(seed, size, offset),
            headers={**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        ) as response,
    ):
        assert response.status == 204, await response.text()
        result: dict[str, Any] = json.loads(response.headers["RhinoBox-Result"])
        return result


async def test_a_200_mb_upload_survives_dropped_connections(tmp_path: Path) -> None:
    size, seed = 200 * MIB, 5
    with RhinoBoxProcess(tmp_path / "data") as server:
        url = await _create(server.url, size)
        offset = 0
        for _ in range(4):  # each attempt sends 30 MiB of the rest, then the connection drops
            rest = generated_bytes(seed, size, offset)
            await asyncio.to_thread(_cut_patch, server.url, url, offset, rest, 30 * MIB)
            await asyncio.sleep(0.2)
            new_offset = await _head_offset(server.url, url)
            assert offset < new_offset <= offset + 30 * MIB
            offset = new_offset
        result = await _finish(server.url, url, offset, seed, size)
        assert result["hash"] == generated_digest(seed, size)
        assert result["status"] == "stored"
        assert blob_count(server.data_dir) == 1
        assert part_files(server.data_dir) == []


async def test_kill_9_mid_upload_then_resume(tmp_path: Path) -> None:
    size, seed = 24 * MIB, 6
    data_dir = tmp_path / "data"
    server = RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="always").start()
    try:
        url = await _create(server.url, size)
        acknowledged = 8 * MIB
        async with aiohttp.ClientSession() as session:
            first = generated_bytes(seed, size, 0, acknowledged)
            headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
            async with session.patch(f"{server.url}{url}", data=first, headers=headers) as response:
                assert response.status == 204
        rest = generated_bytes(seed, size, acknowledged)
        sender = asyncio.to_thread(_cut_patch, server.url, url, acknowledged, rest, 6 * MIB)
        await sender
        server.kill()  # mid-upload (its last chunk may be partly written)
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    with RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="always") as restarted:
        offset = await _head_offset(restarted.url, url)
        assert acknowledged <= offset <= acknowledged + 6 * MIB  # nothing acknowledged was lost
        result = await _finish(restarted.url, url, offset, seed, size)
        assert result["hash"] == generated_digest(seed, size)
    assert blob_problems(data_dir, [result["hash"]]) == []
    verified = run_cli("verify", "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_fifty_resumable_uploads_at_once(server: RhinoBoxProcess) -> None:
    size = 256 * 1024

    async def one(seed: int) -> str:
        url = await _create(server.url, size)
        async with aiohttp.ClientSession() as session:
            for start in (0, size // 2):
                headers = {**TUS, "Upload-Offset": str(start), "Content-Type": "application/offset+octet-stream"}
                body = generated_bytes(seed, size, start, size // 2)
                async with session.patch(f"{server.url}{url}", data=body, headers=headers) as response:
                    assert response.status == 204, await response.text()
                    if start:
                        return str(json.loads(response.headers["RhinoBox-Result"])["hash"])
        raise AssertionError("unreachable")

    digests = await asyncio.gather(*(one(seed) for seed in range(100, 150)))
    assert digests == [generated_digest(seed, size) for seed in range(100, 150)]
    assert blob_count(server.data_dir) == 50
    assert part_files(server.data_dir) == []
