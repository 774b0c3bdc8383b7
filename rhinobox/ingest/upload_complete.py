"""Completing a resumable upload: its bytes take the commit path every door takes, and the result is kept.

A final error (content that is not what the client declared) ends the upload for good; any other
(disk full, store unreachable) leaves it empty and open, so a client's retry sends it again rather
than believing it stored. Before the commit the hash must have consumed exactly the partial file's bytes
(`hashed_whole`), so a blob is never stored under a hash that covers other bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

from rhinobox.errors import DigestMismatch, EmptyFile, StorageError, storage_failure
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.finish import finish_spooled
from rhinobox.ingest.names import clean_filename, clean_hint, extension_of
from rhinobox.ingest.report import UploadMeta
from rhinobox.ingest.resources import IngestResources
from rhinobox.ingest.upload_append import UploadProgress
from rhinobox.ingest.upload_records import UploadDirectory, UploadRecord

__all__ = ["Describe", "complete_upload", "hashed_whole", "upload_entry", "upload_meta"]

log = logging.getLogger(__name__)

# Errors after which the upload's bytes are wrong for good: the upload fails and takes no more bytes.
_FINAL_ERRORS: Final = (DigestMismatch, EmptyFile)
Describe = Callable[[FileEntry, UploadMeta], dict[str, Any]]  # one ingested file as the API shows it


def upload_meta(metadata: Mapping[str, str]) -> UploadMeta:
    """The hint and comment a multipart upload would carry, from tus metadata keys `category` and `comment`."""
    hint = metadata.get("category")
    return UploadMeta(hint=clean_hint(hint) if hint else None, comment=metadata.get("comment") or None)


def upload_entry(record: UploadRecord) -> FileEntry:
    """The pipeline's entry for an upload: name and claimed type from its metadata, its declared digest."""
    name = clean_filename(record.metadata.get("filename", ""))
    claimed = record.metadata.get("filetype")
    return FileEntry(
        index=0,
        name=name,
        extension=extension_of(name),
        claimed_type=claimed.strip().lower() if claimed else None,
        expected_digest=record.expected_digest,
    )


async def complete_upload(
    resources: IngestResources,
    directory: UploadDirectory,
    record: UploadRecord,
    progress: UploadProgress,
    describe: Describe,
) -> None:
    """Every byte is in: verify, prepare, commit and record the file, then keep its result in the record."""
    assert record.length is not None
    part_path = directory.part_path(record.id)
    entry = upload_entry(record)
    meta = upload_meta(record.metadata)
    try:
        progress = await resources.pool.run_io(partial(hashed_whole, part_path, record.length, progress))
        entry.size = record.length
        entry.digest = progress.hexdigest()
        entry.spool_path = part_path  # the commit renames it into the store
        await finish_spooled(resources, entry, progress.scan, meta)
    except _FINAL_ERRORS as exc:
        directory.save(record.with_changes(error={"code": exc.code, "message": exc.message}))
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            directory.remove_part(record.id)  # finish_spooled removed it, unless the check refused it first
            directory.create_part(record.id)  # start over from 0
        raise
    directory.save(record.with_changes(result=describe(entry, meta)))


def hashed_whole(part_path: str, length: int, progress: UploadProgress) -> UploadProgress:
    """`progress` if its hash consumed exactly the `length` bytes the partial file holds, else the file re-hashed
    (blocking); a file of another size is a storage error: its bytes are not the upload's."""
    try:
        size = os.stat(part_path).st_size
    except OSError as exc:
        raise storage_failure(exc, "read the partial upload") from exc
    if size != length:
        raise StorageError(f"the partial upload holds {size} bytes, not the upload's {length}")
    if progress.hashed == length:
        return progress
    log.warning("the hash of %s covered %d of its %d bytes: hashing it again", part_path, progress.hashed, length)
    again = UploadProgress()
    again.catch_up(part_path, length)
    return again
