"""`GET /stats`: what the store holds and what deduplication saved, overall and by category."""

from __future__ import annotations

import asyncio

from aiohttp import web

from rhinobox.http.keys import CATALOG, UPLOADS

__all__ = ["get_stats"]


async def get_stats(request: web.Request) -> web.Response:
    stats = await request.app[CATALOG].stats()
    usage = await asyncio.get_running_loop().run_in_executor(None, request.app[UPLOADS].usage)
    return web.json_response(
        {
            "blobs": stats.blobs,
            "bytes_stored": stats.bytes_stored,
            "uploads": stats.uploads,
            "bytes_uploaded": stats.bytes_uploaded,
            "bytes_saved": stats.bytes_saved,
            "categories": {name: {"blobs": c.blobs, "bytes": c.bytes} for name, c in sorted(stats.by_category.items())},
            "resumable": {"open": usage.open_uploads, "open_bytes": usage.open_bytes},
        }
    )
