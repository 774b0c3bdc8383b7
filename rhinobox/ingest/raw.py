"""One raw (non-multipart) body as one file, for `PUT /blobs/{hash}`: the client names the hash up front.

The same stages as multipart ingest (spool and hash, sniff, categorize, commit, record) and the same
guarantees: the size limit holds while streaming, a body that does not hash to the declared digest
stores nothing, and no spool file outlives the call, whatever ends it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

from rhinobox.catalog.base import UploadRecord
from rhinobox.errors import DigestMismatch, EmptyFile, FileTooLarge, StorageError
from rhinobox.ingest.blocks import BlockSpooler
from rhinobox.ingest.entry import DUPLICATE, STORED, FileEntry
from rhinobox.ingest.names import extension_of
from rhinobox.ingest.spool import remove_spool_file
from rhinobox.ingest.stages import commit_entries, prepare_spooled

if TYPE_CHECKING:
    from rhinobox.ingest.pipeline import IngestPipeline

__all__ = ["ingest_raw", "record_known"]


async def record_known(pipeline: IngestPipeline, digest: str, name: str, claimed_type: str | None) -> FileEntry | None:
    """Record an upload of an already stored blob without its bytes; None if the blob is not stored.

    The pin keeps a concurrent delete from running between the check and the record.
    """
    await pipeline.pins.pin(digest)
    try:
        blob = await pipeline.catalog.get_blob(digest)
        if blob is None:
            return None
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, pipeline.store.contains, digest):
            return None  # the catalog lost its blob: take the body and store it again
        if pipeline.store.needs_flush(digest) and not pipeline.catalog.makes_blobs_durable:
            await pipeline.store.flush()
        entry = _entry(digest, name, claimed_type)
        entry.digest, entry.size, entry.mime, entry.blob_category = digest, blob.size, blob.mime, blob.category
        entry.status = DUPLICATE
        await pipeline.catalog.record_uploads([_record(entry)])
        return entry
    finally:
        pipeline.pins.unpin(digest)


async def ingest_raw(
    pipeline: IngestPipeline, digest: str, name: str, claimed_type: str | None, body: AsyncIterator[bytes]
) -> FileEntry:
    """Spool, verify against `digest`, commit and record one body; raises a `RhinoBoxError` on failure."""
    pipeline.pool.admit()
    pipeline.check_free_space()
    entry = _entry(digest, name, claimed_type)
    spooler = BlockSpooler(pipeline.pool, pipeline.new_spool_writer())
    writer = spooler.writer
    try:
        await _spool(pipeline, entry, spooler, body)
        entry.digest = await spooler.finish()
        entry.spool_path = writer.path
        if entry.digest != digest:
            raise DigestMismatch(f"content hashes to {entry.digest}, not the declared {digest}")
        await pipeline.pins.pin(digest)
        entry.pinned = True
        try:
            await _blocking(pipeline, partial(prepare_spooled, pipeline.stage_context, entry, writer.head))
        except OSError as exc:
            raise StorageError(f"could not read the spooled file ({exc.strerror})") from None
        await _commit(pipeline, entry)
        await pipeline.catalog.record_uploads([_record(entry)])
        return entry
    finally:
        await spooler.abort()  # waits for a block in flight, then removes the spool file unless committed
        if entry.spool_path is not None:
            remove_spool_file(entry.spool_path)
        if entry.pinned:
            pipeline.pins.unpin(digest)


async def _spool(pipeline: IngestPipeline, entry: FileEntry, spooler: BlockSpooler, body: AsyncIterator[bytes]) -> None:
    limit = pipeline.settings.max_upload_bytes
    async for chunk in body:
        entry.size += len(chunk)
        if entry.size > limit:
            raise FileTooLarge(f"files may be at most {pipeline.settings.max_upload_mb} MiB")
        await spooler.append(chunk)
    if entry.size == 0:
        raise EmptyFile()


async def _commit(pipeline: IngestPipeline, entry: FileEntry) -> None:
    """Rename, then one sync for the bytes and the name (or none: the record's covers them), as IngestSession does."""
    store = pipeline.store
    spooled = [entry.digest] if entry.spool_path is not None and entry.digest is not None else []
    async with pipeline.pins.committing(spooled):  # one concurrent commit of new content answers `stored`
        await _blocking(pipeline, partial(commit_entries, store, [entry]))
    if entry.error is not None:
        raise entry.error
    assert entry.digest is not None
    if pipeline.catalog.makes_blobs_durable:
        return  # the record's own sync covers the bytes and the name too (SQLiteCatalog)
    if entry.status == STORED or store.needs_flush(entry.digest):
        await store.flush()


async def _blocking(pipeline: IngestPipeline, call: Callable[[], None]) -> None:
    """Run a store-touching stage inline for a local store, on a worker for a network one."""
    if pipeline.store.inline_io:
        call()
    else:
        await pipeline.pool.run_io(call)


def _entry(digest: str, name: str, claimed_type: str | None) -> FileEntry:
    return FileEntry(
        index=0, name=name, extension=extension_of(name), claimed_type=claimed_type, expected_digest=digest
    )


def _record(entry: FileEntry) -> UploadRecord:
    assert entry.digest is not None
    category = entry.blob_category or "other/octet-stream"
    return UploadRecord(
        digest=entry.digest,
        size=entry.size,
        mime=entry.mime or "application/octet-stream",
        blob_category=category,
        category=category,
        name=entry.name,
        hint=None,
        comment=None,
        claimed_type=entry.claimed_type,
        uploaded_at=time.time(),
    )
