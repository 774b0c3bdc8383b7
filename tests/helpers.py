"""Shared test helpers: building multipart uploads, hashing independently, inspecting the data dir."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import blake3

__all__ = ["blake3_hex", "blob_files", "form", "raw_multipart", "spool_files"]


def blake3_hex(data: bytes) -> str:
    """BLAKE3 of `data`, computed independently of the server's code path."""
    return blake3.blake3(data).hexdigest()


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
