"""Content the store already has: its type comes from the catalog, and an upload of it needs no bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rhinobox.errors import storage_failure
from rhinobox.ingest.commit import record_files
from rhinobox.ingest.entry import DUPLICATE, FileEntry
from rhinobox.ingest.report import UploadMeta
from rhinobox.ingest.resources import IngestResources
from rhinobox.ingest.sniff import SNIFF_BYTES

__all__ = ["missing_content", "record_known", "type_known_content"]


async def missing_content(resources: IngestResources, digests: Sequence[str]) -> list[str]:
    """The digests (first occurrence, in order) whose content the server cannot hand back: to be uploaded.

    The catalog answers for all of them in one query; with a local store the blobs it lists are also
    looked for on disk (one stat each), so a blob lost from disk is reported
    missing and a client's "ask, then upload what is missing" repairs it. A network store is not asked
    (a request per blob); `rhinobox verify` finds its losses.
    """
    wanted = list(dict.fromkeys(digests))
    known = await resources.catalog.known_digests(wanted)
    store = resources.store
    if known and store.inline_io:
        listed = [d for d in wanted if d in known]
        present = await asyncio.get_running_loop().run_in_executor(
            None, lambda: {d for d in listed if store.contains(d)}
        )
        known = set(known) & present
    return [d for d in wanted if d not in known]


async def type_known_content(resources: IngestResources, entries: Sequence[FileEntry]) -> None:
    """Give content that was already stored its recorded type: one catalog query, no sniffing."""
    unknown = [e for e in entries if e.ok and e.digest is not None and e.mime is None]
    if not unknown:
        return
    known = await resources.catalog.known_mimes(e.digest for e in unknown if e.digest is not None)
    rules = resources.categorizer.snapshot()
    for entry in unknown:
        assert entry.digest is not None
        mime = known.get(entry.digest)
        if mime is None:  # a blob the catalog does not know (left by a crash): look at its bytes
            head = b"".join([chunk async for chunk in resources.store.read_range(entry.digest, 0, SNIFF_BYTES)])
            mime = resources.sniffer.sniff(head)
        entry.mime = mime
        entry.blob_category = rules.categorize(mime, entry.extension)


async def record_known(
    resources: IngestResources, entry: FileEntry, meta: UploadMeta, *, expected_size: int | None = None
) -> bool:
    """Record an upload of already stored content without its bytes; False if the content is not stored.

    `entry.expected_digest` names the content (and `expected_size` its size, when the client said: a
    blob of another size is not what the client has). The pin keeps a concurrent delete from running
    between the check and the record.
    """
    digest = entry.expected_digest
    assert digest is not None
    await resources.pins.pin(digest)
    try:
        blob = await resources.catalog.get_blob(digest)
        if blob is None or (expected_size is not None and blob.size != expected_size):
            return False
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, resources.store.contains, digest):
            return False  # the catalog lost its blob: take the body and store it again
        if resources.store.needs_flush(digest) and not resources.catalog.makes_blobs_durable:
            try:
                await resources.store.flush()
            except OSError as exc:  # a failed sync, now or earlier: a storage error, not a 500 `internal`
                raise storage_failure(exc, "make the stored copy durable") from exc
        entry.digest, entry.size, entry.mime, entry.blob_category = digest, blob.size, blob.mime, blob.category
        entry.status = DUPLICATE
        await record_files(resources, [entry], meta)
        return True
    finally:
        resources.pins.unpin(digest)
