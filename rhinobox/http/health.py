"""`GET /healthz`: 200 with the version when the catalog answers and the data directory is writable."""

from __future__ import annotations

import os

from aiohttp import web

from rhinobox import __version__
from rhinobox.http.keys import CATALOG, RECONCILE, STORE

__all__ = ["healthz"]


async def healthz(request: web.Request) -> web.Response:
    problems = []
    try:
        await request.app[CATALOG].ping()
    except Exception:
        problems.append("catalog")
    if not os.access(request.app[STORE].spool_dir, os.W_OK):
        problems.append("data_dir")
    body = {
        "status": "ok" if not problems else "unavailable",
        "version": __version__,
        "problems": problems,
        "reconcile": request.app[RECONCILE].as_json(),
    }
    return web.json_response(body, status=200 if not problems else 503)
