"""Appending to a resumable upload's partial file while its BLAKE3 and type evidence grow in order.

`UploadProgress` is what this process has hashed of one upload. It is rebuilt from the partial file
when it falls behind (after a restart, or when another process took a chunk), so the bytes are read
back only then, never at the end. `PartAppender` is the `BlockWriter` of one PATCH: each block is
written at the end of the partial file and, unless the chunk carries a checksum that is still to be
verified, hashed on the same worker thread as it is written. A block write or the sync that fails
cuts the file back to where the request began (durable under RHINOBOX_FSYNC=always: the request before
synced it) and makes the progress forget the cut bytes, so the offset a client resumes from never
counts bytes that may not be on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any, Final

import blake3

from rhinobox.errors import InsufficientStorage, RhinoBoxError, StorageError, storage_failure
from rhinobox.ingest.blocks import WRITE_BLOCK
from rhinobox.ingest.documents import DocumentScan
from rhinobox.ingest.spool import HASH_THREADS

__all__ = ["PartAppender", "UploadProgress", "truncate_part"]

log = logging.getLogger(__name__)

_APPEND_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC


class UploadProgress:
    """The BLAKE3 and the type evidence of an upload's first `hashed` bytes (blocking methods)."""

    def __init__(self) -> None:
        self.hashed = 0
        self.scan = DocumentScan()
        self._hasher = blake3.blake3(max_threads=HASH_THREADS)

    def rewind(self, offset: int) -> None:
        """Forget the bytes hashed past `offset`; BLAKE3 cannot step back, so `catch_up` reads the rest again."""
        if self.hashed > offset:
            self.hashed = 0
            self.scan = DocumentScan()
            self._hasher = blake3.blake3(max_threads=HASH_THREADS)

    def feed(self, pieces: Sequence[bytes | memoryview]) -> None:
        for piece in pieces:
            self.scan.feed(piece)
            self._hasher.update(piece)
            self.hashed += len(piece)

    def catch_up(self, part_path: str, received: int) -> None:
        """Hash the bytes of the partial file that this process has not seen (read back from disk)."""
        self.rewind(received)  # the file was cut back (by another process, say) below what was hashed
        if self.hashed == received:
            return
        try:
            with open(part_path, "rb", buffering=0) as part:
                part.seek(self.hashed)
                while self.hashed < received:
                    block = part.read(min(WRITE_BLOCK, received - self.hashed))
                    if not block:
                        raise StorageError("the partial file is shorter than its offset")
                    self.feed([block])
        except OSError as exc:
            raise storage_failure(exc, "read the partial upload") from exc

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


class PartAppender:
    """One request's appends to a partial file, from offset `start` (the file's size, checked under lock).

    With `checksum` (a hashlib object) the bytes are only summed as they pass; the caller verifies
    the sum, then catches the progress up (or truncates the chunk away).
    """

    def __init__(self, part_path: str, start: int, progress: UploadProgress, checksum: Any | None) -> None:
        self.start = start
        self.written = 0
        self._part_path = part_path
        self._progress = progress
        self._checksum = checksum
        self._failed = False  # a write or the sync failed: the file is back at `start` and takes no more
        try:
            self._fd: int | None = os.open(part_path, _APPEND_FLAGS)
        except OSError as exc:
            raise storage_failure(exc, "open the partial upload") from exc

    def write_pieces(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Append one block (on a worker thread); the file's end is always where the last one stopped."""
        if self._fd is None or self._failed:
            raise StorageError("the partial upload is closed")
        total = sum(len(piece) for piece in pieces)
        try:
            written = os.writev(self._fd, pieces)
            if written < total:
                rest = memoryview(b"".join(pieces))[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest) :]
        except OSError as exc:
            raise self._fail(exc, "write the partial upload") from exc
        self.written += total
        if self._checksum is not None:
            for piece in pieces:
                self._checksum.update(piece)
        elif self._progress.hashed == self.start + self.written - total:
            self._progress.feed(pieces)

    def checksum_digest(self) -> bytes:
        assert self._checksum is not None
        return bytes(self._checksum.digest())

    def sync(self) -> None:
        """Make the bytes written so far durable (RHINOBOX_FSYNC=always: an acknowledged byte survives)."""
        if self._fd is not None and not self._failed:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise self._fail(exc, "sync the partial upload") from exc

    def _fail(self, exc: OSError, doing: str) -> InsufficientStorage | StorageError:
        """Cut this request's bytes away (on the worker thread that saw the failure): after a failed write or
        sync, Linux may have dropped them from the page cache unwritten, and the offset must not count them."""
        self._failed = True
        try:
            truncate_part(self._part_path, self.start)
        except RhinoBoxError as cut:  # a second fault: the bytes stay counted, as before this cut existed
            log.warning("could not cut back the partial upload %s: %s", self._part_path, cut)
        self._progress.rewind(self.start)
        return storage_failure(exc, doing)

    def abort(self) -> None:
        """Close; what was written stays (an interrupted chunk keeps its bytes, as tus asks) unless it failed."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def truncate_part(part_path: str, size: int) -> None:
    """Cut the partial file back to `size` bytes (a chunk refused or cut short); never longer (zeros)."""
    try:
        if os.stat(part_path).st_size > size:
            os.truncate(part_path, size)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise storage_failure(exc, "truncate the partial upload") from exc


def new_checksum(algorithm: str) -> Any:
    """A hashlib object for a tus checksum algorithm name (`sha1`, `sha256`, `md5`, ...)."""
    return hashlib.new(algorithm)
