"""Shared test helpers: clients and settings, multipart bodies, error and job checks, the data dir from outside."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import blake3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import rhinobox.blobs.local as local_module
from rhinobox.blobs import fsops
from rhinobox.catalog.base import Catalog, UploadRecord
from rhinobox.errors import StorageError
from rhinobox.ingest.buffers import Arena
from rhinobox.ingest.entry import FileEntry
from rhinobox.settings import Settings
from tests.samples import SAMPLES

__all__ = [
    "MULTIPART_BOUNDARY",
    "AiohttpClient",
    "Client",
    "MultipartPart",
    "assert_error",
    "blake3_hex",
    "blob_files",
    "entry_of",
    "field_part",
    "file_part",
    "form",
    "free_port",
    "get_stats",
    "ingest_one",
    "job_of",
    "make_settings",
    "multipart",
    "multipart_headers",
    "png",
    "read_events",
    "send_partial_upload",
    "spool_files",
    "start_job",
    "wait_done",
    "wait_until",
    "wait_until_listening",
]

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]  # pytest-aiohttp's `aiohttp_client` fixture

MULTIPART_BOUNDARY: Final = "rhinoboxtestboundary"
JOB_FINISHED_STATES: Final = ("done", "failed", "interrupted")
JOB_WAIT_S: Final = 30.0  # a bound on waiting for a small job, so a stuck one fails the test instead of hanging
JOB_POLL_S: Final = 0.02

MultipartPart = tuple[Mapping[str, str | bytes], bytes]  # (part headers, content); bytes values go out as they are


# -- settings and clients ----------------------------------------------------------------------------


def make_settings(data_dir: Path, **overrides: str) -> Settings:
    """Settings for a test: defaults, a private data dir, nothing from the caller's environment."""
    return Settings.load(environ={}, overrides={"data_dir": str(data_dir), "addr": "127.0.0.1:0", **overrides})


def free_port() -> int:
    """A loopback port nothing listens on (free when asked; a test binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether `proc` accepts connections on loopback `port` within `timeout` seconds (False once it exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


async def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    """Poll `condition` every `interval` seconds until it is true; whether it came true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


# -- answers -----------------------------------------------------------------------------------------


async def assert_error(response: aiohttp.ClientResponse, status: int, code: str) -> str:
    """`response` is the JSON error {"error": {"code", "message"}} with this status and code; returns the message."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json", response.content_type
    body = await response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == {"code", "message"}, body
    assert error["code"] == code, body
    message = error["message"]
    assert isinstance(message, str), body
    assert message, body
    return message


async def get_stats(client: Client) -> dict[str, Any]:
    """GET /stats, which must answer 200."""
    response = await client.get("/stats")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def ingest_one(client: Client, name: str, payload: bytes, **fields: str) -> dict[str, Any]:
    """POST /ingest of one file, which must answer 200; returns the file's result."""
    response = await client.post("/ingest", data=form([(name, payload)], **fields))
    assert response.status == 200, await response.text()
    result: dict[str, Any] = (await response.json())["results"][0]
    return result


# -- async jobs --------------------------------------------------------------------------------------


async def start_job(client: Client, files: list[tuple[str, bytes]], **fields: str) -> dict[str, Any]:
    """POST /ingest?async=true, which must answer 202; returns the body (job id and its URLs)."""
    response = await client.post("/ingest?async=true", data=form(files, **fields))
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def job_of(client: Client, job_id: str) -> dict[str, Any]:
    """GET /jobs/{id}, which must answer 200."""
    response = await client.get(f"/jobs/{job_id}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def wait_done(client: Client, job_id: str) -> dict[str, Any]:
    """The job's status once it has finished (done, failed or interrupted), polled."""
    deadline = time.monotonic() + JOB_WAIT_S
    while time.monotonic() < deadline:
        body = await job_of(client, job_id)
        if body["state"] in JOB_FINISHED_STATES:
            return body
        await asyncio.sleep(JOB_POLL_S)
    raise AssertionError("job did not finish")


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream, parsed by hand (the wire format, not our client)."""
    kind, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line == "":
            if data:
                yield kind, json.loads(data)
            kind, data = "message", ""
        elif line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data += line[len("data: ") :]


# -- request bodies ----------------------------------------------------------------------------------


def blake3_hex(data: bytes) -> str:
    """BLAKE3 of `data`, computed independently of the server's code path."""
    return blake3.blake3(data).hexdigest()


def png(seed: int) -> bytes:
    """A small PNG, long enough for the signature table."""
    return SAMPLES["png"][0](seed) + bytes(64)


def entry_of(data: bytes, index: int = 0) -> FileEntry:
    """A hashed file in its own arena, as the session hands it to the prepare stage."""
    arena = Arena(len(data))
    arena.append(data)
    entry = FileEntry(index=index, name=f"f{index}", extension="", claimed_type=None, arena=arena, size=len(data))
    entry.digest = blake3_hex(data)
    return entry


def form(
    files: Iterable[tuple[str, bytes]],
    *,
    field: str = "files",
    content_type: str = "application/octet-stream",
    **fields: str,
) -> aiohttp.FormData:
    """A multipart body with one part per (filename, bytes), plus text fields."""
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, value)
    for filename, payload in files:
        data.add_field(field, payload, filename=filename, content_type=content_type)
    return data


def multipart(*parts: MultipartPart, boundary: str = MULTIPART_BOUNDARY) -> bytes:
    """A hand-framed multipart body, for what a well-behaved client library refuses to send."""
    out = b""
    for headers, content in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in headers.items():
            out += name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()) + b"\r\n"
        out += b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def multipart_headers(boundary: str = MULTIPART_BOUNDARY) -> dict[str, str]:
    """The request headers of a `multipart` body framed with `boundary`."""
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def file_part(payload: bytes, name: str | bytes = "f.bin", **headers: str) -> MultipartPart:
    """A `files` part; a bytes `name` goes out as it is (control characters, invalid UTF-8)."""
    raw_name = name if isinstance(name, bytes) else name.encode()
    return {"Content-Disposition": b'form-data; name="files"; filename="' + raw_name + b'"', **headers}, payload


def field_part(name: str, value: str) -> MultipartPart:
    """A text field part."""
    return {"Content-Disposition": f'form-data; name="{name}"'}, value.encode()


async def send_partial_upload(
    host: str | None, port: int | None, parts: list[tuple[str, bytes]], *, declared_length: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a raw connection and send an ingest request whose body stops short of `declared_length`.

    The last part is left open (no closing boundary): the server sees a client that stalls or vanishes
    mid-upload. Returns the connection so the test can wait, read the answer, or close it.
    """
    assert host is not None
    assert port is not None
    boundary = "partialupload"
    body = b"".join(
        (b"\r\n" if i else b"")
        + f"--{boundary}\r\n".encode()
        + f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n\r\n'.encode()
        + payload
        for i, (name, payload) in enumerate(parts)
    )
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /ingest HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
        + f"Content-Length: {declared_length}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return reader, writer


# -- the data dir from outside -----------------------------------------------------------------------


def blob_files(data_dir: Path) -> dict[str, Path]:
    """Every stored blob file by name (its digest)."""
    root = data_dir / "blobs"
    found: dict[str, Path] = {}
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            found[filename] = Path(dirpath) / filename
    return found


def spool_files(data_dir: Path) -> list[Path]:
    """Spool files left in the data dir (there should be none between requests)."""
    spool = data_dir / "tmp"
    return sorted(spool.iterdir()) if spool.exists() else []


def first_sync_fails(monkeypatch: pytest.MonkeyPatch) -> list[OSError]:
    """Local stores' next filesystem sync reports an I/O error, later ones succeed; returns the pending failures."""
    failures = [OSError(errno.EIO, "Input/output error")]
    sync = fsops.sync_filesystem

    def failing_once(fd: int) -> None:
        if failures:
            raise failures.pop()
        sync(fd)

    monkeypatch.setattr(local_module, "sync_filesystem", failing_once)
    return failures


def record_fails_once(monkeypatch: pytest.MonkeyPatch, catalog: Catalog) -> None:
    """The catalog's next `record_uploads` fails as a failing disk would; later ones work again."""
    real = catalog.record_uploads

    async def record_uploads(records: Sequence[UploadRecord]) -> None:
        monkeypatch.setattr(catalog, "record_uploads", real)
        raise StorageError("could not record the uploads (disk I/O error)")

    monkeypatch.setattr(catalog, "record_uploads", record_uploads)
