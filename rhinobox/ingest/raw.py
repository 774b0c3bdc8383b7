"""One raw (non-multipart) body as one file, for `PUT /blobs/{hash}`: the client names the hash up front.

The same stages as multipart ingest (spool and hash, sniff, categorize, commit, record) and the same
guarantees: the size limit holds while streaming, a body that does not hash to the declared digest
stores nothing, and no spool file outlives the call, whatever ends it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from rhinobox.errors import EmptyFile, FileTooLarge
from rhinobox.ingest.blocks import BlockSpooler
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.finish import finish_spooled
from rhinobox.ingest.known import record_known
from rhinobox.ingest.names import extension_of
from rhinobox.ingest.report import UploadMeta
from rhinobox.ingest.resources import IngestResources
from rhinobox.ingest.spool import SpoolWriter

__all__ = ["ingest_raw", "raw_entry", "record_known_raw"]


def raw_entry(digest: str, name: str, claimed_type: str | None) -> FileEntry:
    """The entry for one raw body that must hash to `digest`."""
    return FileEntry(
        index=0, name=name, extension=extension_of(name), claimed_type=claimed_type, expected_digest=digest
    )


async def record_known_raw(
    resources: IngestResources, digest: str, name: str, claimed_type: str | None
) -> FileEntry | None:
    """Record an upload of an already stored blob without its bytes; None if the blob is not stored."""
    entry = raw_entry(digest, name, claimed_type)
    return entry if await record_known(resources, entry, UploadMeta()) else None


async def ingest_raw(
    resources: IngestResources, digest: str, name: str, claimed_type: str | None, body: AsyncIterator[bytes]
) -> FileEntry:
    """Spool, verify against `digest`, commit and record one body; raises a `RhinoBoxError` on failure."""
    resources.admit()
    entry = raw_entry(digest, name, claimed_type)
    spooler = BlockSpooler(resources.pool, resources.new_spool_writer())
    try:
        await _spool(resources, entry, spooler, body)
        await spooler.drain()
        entry.digest = spooler.writer.finish()
        entry.spool_path = spooler.writer.path
        await finish_spooled(resources, entry, spooler.writer.scan, UploadMeta())
        return entry
    finally:
        await spooler.abort()  # waits for a block in flight, then removes the spool file unless committed


async def _spool(
    resources: IngestResources, entry: FileEntry, spooler: BlockSpooler[SpoolWriter], body: AsyncIterator[bytes]
) -> None:
    limits = resources.limits
    async for chunk in body:
        entry.size += len(chunk)
        if entry.size > limits.max_upload_bytes:
            raise FileTooLarge(f"files may be at most {limits.max_upload_mb} MiB")
        await spooler.append(chunk)
    if entry.size == 0:
        raise EmptyFile()
