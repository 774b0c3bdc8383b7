"""Shared test helpers: building multipart uploads, hashing independently, inspecting the data dir."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import blake3

from rhinobox.ingest.buffers import Arena
from rhinobox.ingest.entry import FileEntry
from tests.samples import SAMPLES

__all__ = [
    "blake3_hex",
    "blob_files",
    "entry_of",
    "form",
    "png",
    "raw_multipart",
    "send_partial_upload",
    "spool_files",
]


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
    entry.digest = blake3.blake3(data).hexdigest()
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


def raw_multipart(
    parts: Iterable[tuple[bytes, bytes]], boundary: str = "rhinoboxtestboundary"
) -> tuple[bytes, dict[str, str]]:
    """A hand-framed multipart body from (raw Content-Disposition filename bytes, content) pairs.

    For names a well-behaved client library refuses to send (control characters, invalid UTF-8).
    """
    body = b""
    for filename, payload in parts:
        body += (
            f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="files"; filename="'
            + filename
            + b'"\r\n\r\n'
            + payload
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


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
