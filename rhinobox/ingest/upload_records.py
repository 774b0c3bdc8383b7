"""Resumable uploads on disk: one small JSON record and one partial file per upload, under `uploads/`.

The partial file holds the bytes received so far, so its size is the upload's offset: nothing else
has to be written per chunk, and a restart (clean or kill -9) answers from what is on disk. The
record says what the client declared (length, metadata, expected BLAKE3) and, once the upload ended,
its result or error. An upload's last activity is the newest mtime of the two files, so expiry needs
no write either. A record is replaced atomically (write, rename), never edited in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from rhinobox.blobs.fsops import fsync_dir
from rhinobox.errors import RhinoBoxError, StorageError, storage_failure

__all__ = [
    "UPLOADS_DIRNAME",
    "UploadDirectory",
    "UploadRecord",
    "UploadUsage",
    "is_upload_id",
    "new_upload_id",
]

UPLOADS_DIRNAME: Final = "uploads"  # below the data directory, on the blobs' filesystem (commit renames)
RECORD_SUFFIX: Final = ".json"
PART_SUFFIX: Final = ".part"
_ID_BYTES: Final = 16  # 128 random bits: an upload URL cannot be guessed
_ID_PATTERN: Final = re.compile(r"[0-9a-f]{32}")
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_STALE_TEMP_SECONDS: Final = 60.0


def new_upload_id() -> str:
    return secrets.token_hex(_ID_BYTES)


def is_upload_id(value: str) -> bool:
    return _ID_PATTERN.fullmatch(value) is not None


def _writer_tag() -> str:
    """Who writes a record's temporary file: this host and process (servers on several hosts may share the
    directory, and a pid says nothing about another host's processes)."""
    host = hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()
    return f"{host}-{os.getpid()}"


def _writer_alive(temporary: str) -> bool:
    """Whether the process named in a record's temporary file (`<id>.json.<host>-<pid>.tmp`) still runs.

    Another host's writer counts as alive: its temporary file goes once it is too old to be in flight.
    """
    host, _, pid = temporary.rsplit(".", 2)[-2].rpartition("-")
    if host and host != _writer_tag().partition("-")[0]:
        return True
    if not pid.isdigit() or int(pid) == os.getpid():  # this process is starting: it wrote none yet
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """What the client declared about one upload, and how it ended (`result` or `error`, once it has)."""

    id: str
    length: int | None  # None: deferred (creation-defer-length), until a PATCH declares it
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    expected_digest: str | None = None
    # Bytes of the partial file from here on are a chunk whose checksum was not yet verified: a crash
    # mid-chunk must not leave them counted as received.
    unverified_from: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    @property
    def ended(self) -> bool:
        return self.result is not None or self.error is not None

    def with_changes(self, **changes: Any) -> UploadRecord:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class UploadUsage:
    """Open (not yet ended) uploads and the bytes their partial files hold."""

    open_uploads: int
    open_bytes: int


class UploadDirectory:
    """The `uploads/` directory: records and partial files by upload id (blocking calls: keep them short)."""

    def __init__(self, data_dir: Path, *, durable: bool) -> None:
        self.path = data_dir / UPLOADS_DIRNAME
        self.durable = durable  # fsync records and the directory (RHINOBOX_FSYNC=always)

    def open(self) -> None:
        """Create the directory; remove record writes a crash or a failed unlink left (their writer is gone,
        or they are too old to be in flight)."""
        self.path.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for leftover in self.path.glob(f"*{RECORD_SUFFIX}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if not _writer_alive(leftover.name) or leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    def record_path(self, upload_id: str) -> str:
        return f"{self.path}/{upload_id}{RECORD_SUFFIX}"

    def part_path(self, upload_id: str) -> str:
        return f"{self.path}/{upload_id}{PART_SUFFIX}"

    def create(self, record: UploadRecord, *, with_part: bool) -> None:
        """Write a new upload's record (and its empty partial file); fails if the id exists."""
        try:
            if with_part:
                self.create_part(record.id)
            self.save(record)
        except OSError as exc:
            with contextlib.suppress(RhinoBoxError):  # a partial file left here goes with the sweep
                self.remove(record.id)
            raise storage_failure(exc, "create the upload") from exc

    def create_part(self, upload_id: str) -> None:
        """An empty partial file (again, for an upload that starts over)."""
        os.close(os.open(self.part_path(upload_id), _OPEN_FLAGS, 0o644))

    def save(self, record: UploadRecord) -> None:
        """Replace the record atomically (and durably when `durable`)."""
        final = self.record_path(record.id)
        temporary = f"{final}.{_writer_tag()}.tmp"  # processes sharing the directory never share one
        data = json.dumps(asdict(record), separators=(",", ":")).encode()
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, final)
            if self.durable:
                fsync_dir(str(self.path))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise storage_failure(exc, "save the upload record") from exc

    def load(self, upload_id: str) -> UploadRecord | None:
        """The record, or None if there is no such upload (or its record is unreadable)."""
        try:
            with open(self.record_path(upload_id), "rb") as handle:
                fields = json.loads(handle.read())
            return UploadRecord(**fields)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise StorageError(f"the record of upload {upload_id} is unreadable ({exc})") from None

    def received(self, upload_id: str) -> int:
        """Bytes in the partial file (0 if it is gone)."""
        try:
            return os.stat(self.part_path(upload_id)).st_size
        except FileNotFoundError:
            return 0

    def last_activity(self, upload_id: str) -> float:
        """When the upload last changed: the newer mtime of its record and its partial file."""
        newest = 0.0
        for path in (self.record_path(upload_id), self.part_path(upload_id)):
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, os.stat(path).st_mtime)
        return newest or time.time()

    def remove(self, upload_id: str) -> None:
        """Remove the partial file, then the record (idempotent)."""
        for path in (self.part_path(upload_id), self.record_path(upload_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise storage_failure(exc, "remove the upload") from exc

    def remove_part(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part_path(upload_id))

    def upload_ids(self) -> Iterator[str]:
        """Every upload with a record, in no order."""
        with os.scandir(self.path) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(RECORD_SUFFIX) and is_upload_id(name[: -len(RECORD_SUFFIX)]):
                    yield name[: -len(RECORD_SUFFIX)]

    def orphan_parts(self) -> Iterator[str]:
        """Partial files without a record (a creation cut by a crash before its record was written)."""
        with os.scandir(self.path) as entries:
            names = {entry.name for entry in entries}
        for name in names:
            if name.endswith(PART_SUFFIX) and f"{name[: -len(PART_SUFFIX)]}{RECORD_SUFFIX}" not in names:
                yield name[: -len(PART_SUFFIX)]

    def usage(self) -> UploadUsage:
        """Open uploads and their bytes: one directory scan (uploads are few; bounded by a setting)."""
        count = size = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.name.endswith(PART_SUFFIX):
                    count += 1
                    with contextlib.suppress(FileNotFoundError):
                        size += entry.stat().st_size
        return UploadUsage(count, size)
