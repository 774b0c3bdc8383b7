"""Deleting content: the catalog entry, then the bytes, then one sync for both; uploads of it wait meanwhile."""

from __future__ import annotations

import asyncio

from rhinobox.ingest.resources import IngestResources

__all__ = ["delete_content"]


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
