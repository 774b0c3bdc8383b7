"""`POST /ingest` (alias `/ingest/media`): multipart in, one JSON result per file out, in order."""

from __future__ import annotations

from aiohttp import web

from rhinobox.http.bodies import body_chunks
from rhinobox.http.jobs import ASYNC_PARAM, ingest_async, wants_async
from rhinobox.http.keys import METRICS, PIPELINE
from rhinobox.http.results import report_body, report_status

__all__ = ["ingest"]


async def ingest(request: web.Request) -> web.Response:
    if ASYNC_PARAM in request.query and wants_async(request):
        return await ingest_async(request)
    report = await request.app[PIPELINE].ingest(request.headers.get("Content-Type"), body_chunks(request))
    request.app[METRICS].observe_ingest(report)
    return web.json_response(report_body(report), status=report_status(report))
