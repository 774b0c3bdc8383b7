"""Spool files: upload bytes written to the data directory's spool area while they are hashed.

Small files arrive whole in an arena and are written in one call (`write_spool_file`); large ones
stream through `SpoolWriter`, which hashes and writes in big blocks (BLAKE3 releases the GIL for
large updates) so a file is never held whole in memory.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import blake3

from rhinobox.blobs.fsops import start_writeback
from rhinobox.errors import StorageError, storage_failure
from rhinobox.ingest.documents import DocumentScan
from rhinobox.ingest.sniff import SNIFF_BYTES

__all__ = ["SPOOL_SUFFIX", "SpoolNames", "SpoolWriter", "remove_spool_file", "write_spool_file"]

log = logging.getLogger(__name__)
SPOOL_SUFFIX: Final = ".spool"
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
# Threads BLAKE3 may use on one large update; bounded so hashing does not starve the other workers.
HASH_THREADS: Final = 2


class SpoolNames:
    """New spool file paths in one directory: a random per-instance prefix and a counter.

    A random name per file cost a `getrandom` call each; a counter costs nothing, and O_EXCL still
    refuses (never overwrites) a name that somehow exists.
    """

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self._prefix = os.path.join(spool_dir, f"{os.getpid():x}-{secrets.token_hex(6)}-")
        self._numbers = itertools.count()  # next() is atomic under the GIL: safe across worker threads

    def new_path(self) -> str:
        """A string, not a `Path`: every small file gets one, on a worker thread that shares the GIL."""
        return f"{self._prefix}{next(self._numbers)}{SPOOL_SUFFIX}"


def remove_spool_file(path: str) -> None:
    """Remove a spool file that may already be gone (renamed into the store, or cleaned up).

    Never raises: it runs while a failure is being answered, and a file a failing disk keeps is
    removed by the next start (stale spool files go before serving).
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove spool file %s (the next start does): %s", path, exc)


def _storage_error(exc: OSError) -> Exception:
    return storage_failure(exc, "write the spool file")


def write_spool_file(names: SpoolNames, data: bytes | memoryview) -> str:
    """Write `data` to a new spool file and return its path; no file is left on failure."""
    path = names.new_path()
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o644)
    except OSError as exc:
        raise _storage_error(exc) from exc
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise _storage_error(exc) from exc
    os.close(fd)
    return path


class SpoolWriter:
    """One large upload being written to a spool file and hashed; `abort` leaves nothing behind.

    With `writeback` (a store that will sync the file before answering), each block's write-out to
    disk starts as soon as it is written, so the final sync waits for the last blocks only.
    Every byte also passes `scan`, which keeps what type detection needs (`MimeSniffer.sniff_scan`).
    """

    def __init__(self, names: SpoolNames, *, writeback: bool = False) -> None:
        self.path = names.new_path()
        self.writeback = writeback
        self.size = 0
        self.scan = DocumentScan()
        self._hasher = blake3.blake3(max_threads=HASH_THREADS)
        try:
            self._fd: int | None = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise _storage_error(exc) from exc

    @property
    def head(self) -> bytes:
        """The first SNIFF_BYTES written (`scan` keeps more: pass it to `prepare_spooled`)."""
        return self.scan.head[:SNIFF_BYTES]

    def write(self, data: bytes | memoryview) -> None:
        """Hash and write one block (blocking: call from a worker thread for big blocks)."""
        self.write_pieces([data])

    def write_pieces(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Hash and write consecutive pieces with one `writev` (no joining copy on the event loop)."""
        if self._fd is None:
            raise StorageError("spool file is closed")
        for piece in pieces:
            self.scan.feed(piece)
            self._hasher.update(piece)
        total = sum(len(piece) for piece in pieces)
        try:
            written = os.writev(self._fd, pieces)
            if written < total:  # a short write: finish the rest piece by piece
                rest = memoryview(b"".join(pieces))[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest) :]
        except OSError as exc:
            self.abort()
            raise _storage_error(exc) from exc
        if self.writeback:
            start_writeback(self._fd, self.size, total)
        self.size += total

    def finish(self) -> str:
        """Close the file and return the hex digest; the file stays for commit."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return self._hasher.hexdigest()

    def abort(self) -> None:
        """Close and remove the spool file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        remove_spool_file(self.path)
