"""Async ingest over HTTP: `POST /ingest?async=true` answers 202 with a job; `GET /jobs/{id}` and
`GET /jobs/{id}/events` (Server-Sent Events) follow it, on any node when the job store is shared
(PostgreSQL). Also the job manager's lifetime in the app.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from rhinobox.backends import make_job_store
from rhinobox.errors import JobNotFound
from rhinobox.http.bodies import body_chunks
from rhinobox.http.keys import CATALOG, JOBS, METRICS, PIPELINE, SETTINGS
from rhinobox.http.params import flag_param
from rhinobox.http.results import file_result
from rhinobox.ingest.entry import FileEntry
from rhinobox.jobs.manager import JobManager, ResultSink

__all__ = [
    "ASYNC_PARAM",
    "JOB_CHUNK_FILES",
    "end_job_streams",
    "get_job",
    "ingest_async",
    "job_chunk_files",
    "job_events",
    "jobs_ctx",
    "wants_async",
]

ASYNC_PARAM: Final = "async"
# Files are committed and recorded a step at a time (each step costs a sync and a catalog commit):
# about JOB_STEPS steps per job, at least JOB_CHUNK_FILES and at most JOB_CHUNK_MAX files each.
JOB_CHUNK_FILES: Final = 32
JOB_CHUNK_MAX: Final = 1000
JOB_STEPS: Final = 20
SSE_IDLE_SECONDS: Final = 15.0  # a comment line this often keeps proxies from closing a quiet stream


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The job manager lives between the catalog's opening and closing (it writes through it)."""
    settings = app[SETTINGS]
    node_id = uuid.uuid4().hex  # new at every start: a shared store tells live nodes apart by lease
    store = make_job_store(settings, app[CATALOG], node_id)
    await store.open()
    manager = JobManager(store, ttl=settings.job_ttl, grace=settings.shutdown_timeout)
    try:
        await manager.start()
        app[JOBS] = manager
        yield
    finally:
        await manager.close()
        await store.close()


async def end_job_streams(app: web.Application) -> None:
    """on_shutdown: end event streams so graceful shutdown does not wait on idle watchers."""
    if JOBS in app:
        app[JOBS].end_streams()


def wants_async(request: web.Request) -> bool:
    """`?async=true` (or 1, yes, on); false, 0, no, off or absent mean synchronous; anything else is refused."""
    return flag_param(request.query, ASYNC_PARAM)


class _CountedBody:
    """The request body, counting its bytes as they pass."""

    def __init__(self, request: web.Request) -> None:
        self._chunks = body_chunks(request)
        self.bytes = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self.bytes += len(chunk)
            yield chunk


async def ingest_async(request: web.Request) -> web.Response:
    """Receive (spool) every file, answer 202 with the job, and let the job store and record them."""
    manager = request.app[JOBS]
    session, boundary = request.app[PIPELINE].start_session(request.headers.get("Content-Type"))
    job = await manager.create()
    body = _CountedBody(request)
    try:
        total = await session.receive(boundary, body.chunks())
    except BaseException:
        await manager.discard(job)
        raise
    meta = session.meta
    metrics = request.app.get(METRICS)

    async def work(sink: ResultSink) -> None:
        def progress(entry: FileEntry) -> None:
            sink(file_result(entry, meta))

        report = await session.complete(progress=progress, chunk_files=job_chunk_files(total))
        if metrics is not None:
            metrics.observe_ingest(report)

    manager.start_job(job, total=total, received_bytes=body.bytes, work=work)
    return web.json_response(
        {"job": job.id, "status_url": f"/jobs/{job.id}", "events_url": f"/jobs/{job.id}/events"}, status=202
    )


def job_chunk_files(total: int) -> int:
    """Files per commit step: fine-grained progress for small jobs, few syncs for large ones."""
    return min(JOB_CHUNK_MAX, max(JOB_CHUNK_FILES, -(-total // JOB_STEPS)))


async def get_job(request: web.Request) -> web.Response:
    job = await request.app[JOBS].get(request.match_info["id"])
    if job is None:
        raise JobNotFound()
    return web.json_response(job.as_json())


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: `state` first (the job as it stands), a `progress` per file, `end` last.

    Each event is serialized once for all its watchers (`JobEvent.frame`); only the `id:` line is per
    watcher. Past the manager's watcher caps this answers 503 `overloaded` with Retry-After.
    """
    manager: JobManager = request.app[JOBS]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    events = await manager.events(request.match_info["id"], SSE_IDLE_SECONDS)
    if events is None:
        raise JobNotFound()
    sent = 0
    try:
        await response.prepare(request)
        async for event in events:
            if event is None:
                await response.write(b": keep-alive\n\n")
                continue
            sent += 1
            await response.write(b"id: %d\n" % sent)
            await response.write(event.frame())
    except ConnectionError:
        pass  # the watcher went away; the job goes on
    finally:
        await events.aclose()  # also when prepare failed: the watcher's place is given back
    return response
