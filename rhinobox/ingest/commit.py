"""Committing prepared files: where "stored or duplicate?" and "when is it durable?" are decided.

Stored or duplicate:
- Within one request, the first file with some content stores it; later files with the same content
  are duplicates and share the first one's fate (`RequestCommit`, decided in request order).
- Across requests, the store decides: a local commit renames without replacing, so exactly one of two
  concurrent commits of new content creates the blob (`stored`) and the other finds it (`duplicate`).
  A network store has no atomic create, so its commits of the same content go one at a time under the
  hash arbiter's `committing` guard (in-process, or across nodes with PostgreSQL).
- Content the store already had was never spooled (preparation checked under a pin): `duplicate`.

Durable (with `RHINOBOX_FSYNC=always`): before the answer, and before the catalog points at the blob.
- A SQLite catalog on the blob store's disk shares one sync for bytes, names and rows: its commit
  covers them all (`Catalog.makes_blobs_durable`).
- Otherwise one store flush covers every spool write and rename of the request, then the catalog
  records. A crash before the flush ends can leave a name without its bytes, never a row: start-up
  after an unclean stop hashes blobs without a row (rhinobox/runmarker.py, rhinobox/reconcile.py).
With `never`, flushes return at once and the kernel writes back in its own time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import partial
from typing import Final

from rhinobox.catalog.base import UploadRecord
from rhinobox.errors import storage_failure
from rhinobox.ingest.entry import STORED, FileEntry
from rhinobox.ingest.report import FALLBACK_CATEGORY, UploadMeta, upload_category
from rhinobox.ingest.resources import IngestResources
from rhinobox.ingest.sniff import FALLBACK_MIME
from rhinobox.ingest.spool import remove_spool_file
from rhinobox.ingest.stages import commit_entries
from rhinobox.ingest.threads import HandedWork

__all__ = ["COMMIT_CHUNK", "RequestCommit", "make_durable", "record_files", "upload_records"]

COMMIT_CHUNK: Final = 256  # files per worker task when committing to a network store
# Local renames go one chunk at a time: spread over several workers they contend for the directory
# and inode locks in the kernel and take more CPU per file for no gain. At least this many per chunk.
LOCAL_COMMIT_CHUNK_MIN: Final = 64


class RequestCommit:
    """Commits one request's prepared files, chunk by chunk, remembering the content it has seen."""

    def __init__(self, resources: IngestResources, work: HandedWork) -> None:
        self._res = resources
        self._work = work
        self._first_of_digest: dict[str, FileEntry] = {}

    async def commit(self, entries: list[FileEntry]) -> None:
        """Move spooled files into the store, mark each entry `stored` or `duplicate`, make them durable."""
        res = self._res
        repeats = self._drop_repeats(entries)
        ready = [e for e in entries if e.ok and e.digest is not None]
        # A local store's rename-without-replace decides which commit stores new content: no guard needed.
        guarded = () if res.store.inline_io else [e.digest for e in ready if e.spool_path is not None and e.digest]
        async with res.pins.committing(guarded):
            await self._move_into_store(ready)
        for repeat, first in repeats:
            if first.error is not None:
                repeat.fail(first.error)
        await make_durable(res, ready)

    async def _move_into_store(self, ready: list[FileEntry]) -> None:
        res = self._res
        store, pool = res.store, res.pool
        if len(ready) <= 1 and store.inline_io:
            commit_entries(store, ready)
            return
        if store.inline_io:
            # One chunk at a time; a chunk takes at most a quarter of the queue's slots, so a request as
            # large as the queue never waits for it to be empty.
            step = max(LOCAL_COMMIT_CHUNK_MIN, pool.capacity // 4)
            for i in range(0, len(ready), step):
                chunk = ready[i : i + step]
                reserved = await pool.reserve(len(chunk))
                self._work.add(pool.submit(reserved, partial(commit_entries, store, chunk)))
                await self._work.wait()
            return
        # Spread over the workers: a network store's commit is a round trip per file.
        step = max(1, min(COMMIT_CHUNK, -(-len(ready) // pool.workers)))
        for i in range(0, len(ready), step):
            chunk = ready[i : i + step]
            reserved = await pool.reserve(len(chunk))
            self._work.add(pool.submit(reserved, partial(commit_entries, store, chunk)))
        await self._work.wait()

    def _drop_repeats(self, entries: list[FileEntry]) -> list[tuple[FileEntry, FileEntry]]:
        """Content repeated within the request: the first file stores it, later ones are duplicates.

        Decided here, in request order, so that parallel commits cannot make a later file `stored`.
        Returns (repeat, first) pairs: a repeat shares the fate of its first file.
        """
        first_of = self._first_of_digest
        repeats = []
        for entry in entries:
            if not entry.ok or entry.digest is None:
                continue
            first = first_of.setdefault(entry.digest, entry)
            if first is not entry and entry.spool_path is not None:
                remove_spool_file(entry.spool_path)
                entry.spool_path = None
                repeats.append((entry, first))
        return repeats


async def make_durable(resources: IngestResources, committed: Iterable[FileEntry]) -> None:
    """Return once the committed files' bytes and names are durable, or once the record's sync will cover them."""
    if resources.catalog.makes_blobs_durable:
        return  # the record's own sync covers these bytes and names too (SQLiteCatalog)
    store = resources.store
    if any(e.ok and (e.status == STORED or store.needs_flush(e.digest or "")) for e in committed):
        try:
            await store.flush()
        except OSError as exc:
            raise storage_failure(exc, "make the files durable") from exc


def upload_records(entries: Iterable[FileEntry], meta: UploadMeta, now: float) -> list[UploadRecord]:
    """The catalog rows for the committed files among `entries`."""
    return [
        UploadRecord(
            digest=e.digest,
            size=e.size,
            mime=e.mime or FALLBACK_MIME,
            blob_category=e.blob_category or FALLBACK_CATEGORY,
            category=upload_category(e.blob_category or FALLBACK_CATEGORY, meta.hint),
            name=e.name,
            hint=meta.hint,
            comment=meta.comment,
            claimed_type=e.claimed_type,
            uploaded_at=now,
        )
        for e in entries
        if e.ok and e.digest is not None
    ]


async def record_files(resources: IngestResources, entries: Iterable[FileEntry], meta: UploadMeta) -> None:
    """Record each committed file as an upload; the catalog raises the storage layer's errors."""
    await resources.catalog.record_uploads(upload_records(entries, meta, time.time()))
