"""Deleting content: the catalog entry, then the bytes, then one sync for both; uploads of it wait meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from rhinobox.errors import RhinoBoxError
from rhinobox.ingest.entry import STORED, FileEntry
from rhinobox.ingest.resources import IngestResources

__all__ = ["delete_content", "remove_unrecorded"]

log = logging.getLogger(__name__)


async def delete_content(resources: IngestResources, digest: str) -> bool:
    """Remove the blob `digest` and every record of it; False if the catalog did not know it.

    The exclusive hold waits for uploads pinning the hash and keeps new ones out until done, so an
    upload never answers for a blob a delete removed. A crash between the two steps leaves at worst a
    blob without an entry (reconciliation reports it), never an entry without its blob.
    """
    store = resources.store
    async with resources.pins.exclusive(digest):
        if not await resources.catalog.delete_blob(digest):
            return False
        await asyncio.get_running_loop().run_in_executor(None, store.delete, digest)
        await store.flush()
    return True


async def remove_unrecorded(resources: IngestResources, entries: Iterable[FileEntry]) -> None:
    """After a request failed between storing and recording: remove the blobs it stored that no row names.

    Call once the request's pins are released. As a delete, under the hash's exclusive hold: another
    upload of the same content has either recorded its row by then (the blob stays) or stores it again.
    Best effort: a blob that cannot be removed stays an orphan (`rhinobox verify --repair` moves it).
    """
    digests = sorted({e.digest for e in entries if e.ok and e.status == STORED and e.digest is not None})
    for digest in digests:
        try:
            async with resources.pins.exclusive(digest):
                if not await resources.catalog.known_digests([digest]):
                    await asyncio.get_running_loop().run_in_executor(None, resources.store.delete, digest)
        except (OSError, RhinoBoxError) as exc:
            log.warning("could not remove blob %s, stored by a request that failed: %s", digest, exc)
