"""Request bodies streamed from local files: a file's bytes are read in chunks while they are sent."""

from __future__ import annotations

import io
import mimetypes
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import blake3

__all__ = ["HASH_CHUNK", "CountingReader", "LocalFile", "ReadProgress", "hash_file", "multipart_body"]

HASH_CHUNK: Final = 1024 * 1024  # BLAKE3 releases the GIL on large updates
DEFAULT_FIELD: Final = "files"
DEFAULT_TYPE: Final = "application/octet-stream"

ReadProgress = Callable[[int], None]


class CountingReader(io.BufferedReader):
    """A file that reports how many bytes were read from it (aiohttp reads it on a worker thread)."""

    def __init__(self, raw: io.RawIOBase, on_read: ReadProgress) -> None:
        super().__init__(raw, HASH_CHUNK)
        self._on_read = on_read

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        if data:
            self._on_read(len(data))
        return data


def _open(path: Path, on_read: ReadProgress | None) -> io.BufferedReader:
    if on_read is None:
        return path.open("rb")
    return CountingReader(io.FileIO(path, "rb"), on_read)


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file to send: where it is, the name the server should record, and its digest if known."""

    path: Path
    name: str
    digest: str | None = None

    @classmethod
    def of(cls, path: str | Path, digest: str | None = None) -> LocalFile:
        path = Path(path)
        return cls(path, path.name, digest)

    @property
    def content_type(self) -> str:
        return mimetypes.guess_type(self.name)[0] or DEFAULT_TYPE


def hash_file(path: Path) -> tuple[str, int]:
    """(BLAKE3 hex digest, size) of a file, reading it in large chunks (blocking: run it in a thread)."""
    hasher = blake3.blake3()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def multipart_body(
    files: Iterable[LocalFile],
    fields: Mapping[str, str],
    stack: ExitStack,
    *,
    field: str = DEFAULT_FIELD,
    on_read: ReadProgress | None = None,
) -> aiohttp.MultipartWriter:
    """A multipart/form-data body; files are opened on `stack` and streamed, never read whole.

    A known digest travels as the part's `Content-Digest` header, so the server verifies what it got.
    Names go out as UTF-8 (RFC 7578), not percent-quoted, so the server records them as given.
    `on_read` hears of every block read from the files (from aiohttp's reader thread).
    """
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields.items():
        part = writer.append(value)
        part.set_content_disposition("form-data", quote_fields=False, name=name)
    for local in files:
        stream = stack.enter_context(_open(local.path, on_read))
        headers = {"Content-Type": local.content_type}
        if local.digest:
            headers["Content-Digest"] = f"blake3={local.digest}"
        part = writer.append(stream, headers)
        part.set_content_disposition("form-data", quote_fields=False, name=field, filename=local.name)
    return writer
