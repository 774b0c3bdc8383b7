"""Deleting content: the catalog entry, then the bytes, then one sync for both; uploads of it wait meanwhile.

Every removal of a blob runs under the hash's exclusive hold, and a blob that cannot be removed is
remembered (rhinobox.ingest.pending_removals) and removed later by the same rules, so the store
converges to no blob without a row even when unlinks fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Final

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.errors import RhinoBoxError, storage_failure
from rhinobox.ingest.entry import STORED, FileEntry
from rhinobox.ingest.pending_removals import PendingRemovals
from rhinobox.ingest.pins import HashArbiter
from rhinobox.ingest.resources import IngestResources

__all__ = ["delete_content", "remove_unrecorded", "retry_pending_removals", "retrying_removals"]

log = logging.getLogger(__name__)
# How often a running server retries the removals that failed: a failing disk gets a few seconds to
# recover, and a pass over nothing pending costs nothing.
RETRY_INTERVAL_S: Final = 5.0


async def delete_content(resources: IngestResources, digest: str) -> bool:
    """Remove the blob `digest` and every record of it; False if the catalog did not know it.

    The exclusive hold waits for uploads pinning the hash and keeps new ones out until done, so an
    upload never answers for a blob a delete removed. A crash between the two steps leaves at worst a
    blob without an entry (reconciliation reports it), never an entry without its blob. Where either
    step fails the blob is remembered, and removed later if no row names it (the answer is still the
    storage error): a catalog write can fail after its commit landed (its sync failed).
    """
    store = resources.store
    async with resources.pins.exclusive(digest):
        try:
            if not await resources.catalog.delete_blob(digest):
                return False
        except (OSError, RhinoBoxError) as exc:
            log.warning("could not delete the entry of blob %s (the blob goes later if the entry did): %s", digest, exc)
            await _remember(resources.removals, digest)
            raise
        try:
            await asyncio.get_running_loop().run_in_executor(None, store.delete, digest)
        except (OSError, RhinoBoxError) as exc:
            log.warning("could not remove blob %s of a deleted entry (will retry): %s", digest, exc)
            await _remember(resources.removals, digest)
            raise
        try:
            await store.flush()
        except OSError as exc:  # a failed sync, now or earlier (refused until a restart): a storage error
            raise storage_failure(exc, "make the delete durable") from exc
    return True


async def remove_unrecorded(resources: IngestResources, entries: Iterable[FileEntry]) -> None:
    """After a request failed between storing and recording: remove the blobs it stored that no row names.

    Call once the request's pins are released. As a delete, under the hash's exclusive hold: another
    upload of the same content has either recorded its row by then (the blob stays) or stores it again.
    A blob that cannot be removed now is remembered and removed later (`retry_pending_removals`).
    """
    digests = sorted({e.digest for e in entries if e.ok and e.status == STORED and e.digest is not None})
    for digest in digests:
        try:
            async with resources.pins.exclusive(digest):
                try:
                    await _remove_unless_named(resources.store, resources.catalog, digest)
                except (OSError, RhinoBoxError) as exc:
                    log.warning("could not remove blob %s of a failed request (will retry): %s", digest, exc)
                    await _remember(resources.removals, digest)
        except (OSError, RhinoBoxError) as exc:  # the hold itself (a lock shared across nodes) failed
            log.warning("could not hold blob %s to remove it (will retry): %s", digest, exc)
            await _remember(resources.removals, digest)


async def retry_pending_removals(
    store: BlobStore, catalog: Catalog, pins: HashArbiter, removals: PendingRemovals
) -> int:
    """One pass over the pending removals, each by `remove_unrecorded`'s rules; returns how many are left.

    A blob that a row names again (its content was uploaded since) stays and is forgotten; so is one
    already gone. Changes to a hash's entry happen under its hold, so a failure recorded meanwhile by
    another request is never forgotten by a pass that ran before it. After a failed sync nothing is
    removed: whether a row is gone for good is unknown until the next start, which syncs first, decides.
    """
    if store.sync_failure is None:
        for digest in removals.pending():
            try:
                async with pins.exclusive(digest):
                    await _remove_unless_named(store, catalog, digest)
                    await asyncio.get_running_loop().run_in_executor(None, removals.forget, digest)
            except (OSError, RhinoBoxError) as exc:
                log.info("blob %s could not be removed yet: %s", digest, exc)
    if len(removals):  # left for a later pass or the next start: make sure their markers exist
        await asyncio.get_running_loop().run_in_executor(None, removals.write_unwritten)
    return len(removals)


@contextlib.asynccontextmanager
async def retrying_removals(resources: IngestResources) -> AsyncIterator[None]:
    """While serving, retry pending removals every `RETRY_INTERVAL_S`, and once more at the end."""

    async def retry() -> int:
        return await retry_pending_removals(resources.store, resources.catalog, resources.pins, resources.removals)

    async def keep_retrying() -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL_S)
            if len(resources.removals):
                try:
                    await retry()
                except Exception:  # a bug must not end the retries for the rest of the run
                    log.exception("retrying pending blob removals failed")

    task = asyncio.create_task(keep_retrying())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if len(resources.removals) and await retry():
            log.warning("%d blob(s) could not be removed; the next start retries them", len(resources.removals))


async def _remove_unless_named(store: BlobStore, catalog: Catalog, digest: str) -> None:
    """Remove blob `digest` unless a row names it (call under its exclusive hold); raises the store's error."""
    if not await catalog.known_digests([digest]):
        await asyncio.get_running_loop().run_in_executor(None, store.delete, digest)


async def _remember(removals: PendingRemovals, digest: str) -> None:
    await asyncio.get_running_loop().run_in_executor(None, removals.remember, digest)
