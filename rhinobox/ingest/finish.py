"""Finishing one received, spooled and hashed upload: verify, prepare, commit, record.

The way in for every door that is not a multipart session (`PUT /blobs/{hash}`, a completed resumable
upload): the same stages and guarantees as multipart ingest. No spool file outlives the call and the
pin is released, whatever ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rhinobox.errors import StorageError
from rhinobox.ingest.commit import RequestCommit, record_files
from rhinobox.ingest.delete import remove_unrecorded
from rhinobox.ingest.digests import digest_mismatch
from rhinobox.ingest.documents import DocumentScan
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.report import UploadMeta
from rhinobox.ingest.resources import IngestResources
from rhinobox.ingest.spool import remove_spool_file
from rhinobox.ingest.stages import prepare_spooled
from rhinobox.ingest.threads import HandedWork

__all__ = ["finish_spooled"]


async def finish_spooled(
    resources: IngestResources, entry: FileEntry, scan: DocumentScan | bytes, meta: UploadMeta
) -> None:
    """Store `entry` (digest, size and spool_path set; `scan`: what was seen of its bytes); raises its error."""
    assert entry.digest is not None
    recorded = False
    try:
        if entry.expected_digest is not None and entry.expected_digest != entry.digest:
            raise digest_mismatch(entry)
        await resources.pins.pin(entry.digest)
        entry.pinned = True
        try:
            await _blocking(resources, partial(prepare_spooled, resources.stages, entry, scan))
        except OSError as exc:
            raise StorageError(f"could not read the spooled file ({exc.strerror})") from None
        work = HandedWork()
        try:
            await RequestCommit(resources, work).commit([entry])
        finally:
            await work.settle()
        if entry.error is not None:
            raise entry.error
        await record_files(resources, [entry], meta)
        recorded = True
    finally:
        if entry.spool_path is not None:
            remove_spool_file(entry.spool_path)
            entry.spool_path = None
        if entry.pinned:
            resources.pins.unpin(entry.digest)
            entry.pinned = False
        if not recorded:
            await remove_unrecorded(resources, [entry])


async def _blocking(resources: IngestResources, call: Callable[[], None]) -> None:
    """Run a store-touching stage inline for a local store, on a worker for a network one."""
    if resources.store.inline_io:
        call()
    else:
        await resources.pool.run_io(call)
