"""`GET /healthz`: 200 with the version when the catalog answers, the data directory is writable and no sync failed.

It needs no token (load balancers probe it), so with auth on it says only how many blobs
reconciliation found orphaned, missing or torn; the hashes themselves (`orphan_sample`,
`missing_sample`, `torn_sample`, `dropped_sample`) are shown only when auth is off or the probe presents a valid token.
"""

from __future__ import annotations

import os
from typing import Any, Final

from aiohttp import web

from rhinobox import __version__
from rhinobox.http.auth import BEARER
from rhinobox.http.keys import API_TOKENS, CATALOG, RECONCILE, STORE

__all__ = ["healthz"]

SAMPLE_FIELDS: Final = ("orphan_sample", "missing_sample", "torn_sample", "dropped_sample")


async def healthz(request: web.Request) -> web.Response:
    problems = []
    try:
        await request.app[CATALOG].ping()
    except Exception:
        problems.append("catalog")
    if not os.access(request.app[STORE].spool_dir, os.W_OK):
        problems.append("data_dir")
    if request.app[STORE].sync_failure is not None:
        problems.append("blob_sync")  # durable answers are refused until a restart checks the store
    reconcile = request.app[RECONCILE].as_json()
    if not _may_see_hashes(request):
        for name in SAMPLE_FIELDS:
            reconcile.pop(name, None)
    body: dict[str, Any] = {
        "status": "ok" if not problems else "unavailable",
        "version": __version__,
        "problems": problems,
        "reconcile": reconcile,
    }
    return web.json_response(body, status=200 if not problems else 503)


def _may_see_hashes(request: web.Request) -> bool:
    """True when auth is off or the request carries a valid token (read-only will do)."""
    tokens = request.app[API_TOKENS]
    if not tokens.enabled:
        return True
    header = request.headers.get("Authorization", "")
    if header[: len(BEARER)].lower() != BEARER:
        return False
    return tokens.lookup(header[len(BEARER) :].strip()) is not None
