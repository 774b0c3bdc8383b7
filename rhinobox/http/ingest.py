"""`POST /ingest` (alias `/ingest/media`): multipart in, one JSON result per file out, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
from aiohttp import web

from rhinobox.errors import ClientDisconnected, UploadTimeout
from rhinobox.http.errors import status_for
from rhinobox.http.keys import METRICS, PIPELINE
from rhinobox.ingest.entry import DUPLICATE, STORED, FileEntry
from rhinobox.ingest.session import IngestReport

__all__ = ["READ_CHUNK", "ingest", "report_body", "report_status"]

READ_CHUNK: Final = 256 * 1024
# A client that sends nothing for this long is cut off, so a stalled upload cannot hold buffers and
# hash pins (which a delete of the same content waits for) indefinitely.
BODY_IDLE_SECONDS: Final = 60.0


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in large chunks; a vanished client becomes `ClientDisconnected`."""
    content = request.content
    watchdog: _IdleWatchdog | None = None
    try:
        # What already arrived (usually all of a small upload) is taken without arming an idle timer:
        # a timer per request is a few percent of a single-file request's CPU.
        while chunk := content.read_nowait(READ_CHUNK):
            yield chunk
        if content.at_eof():
            return
        watchdog = _IdleWatchdog(BODY_IDLE_SECONDS)
        while chunk := await content.read(READ_CHUNK):
            watchdog.progress()
            yield chunk
    except asyncio.CancelledError:
        if watchdog is not None and watchdog.fired:
            raise UploadTimeout(f"no upload data for {BODY_IDLE_SECONDS:.0f} s") from None
        raise
    except (ConnectionError, aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError) as exc:
        raise ClientDisconnected(f"upload interrupted: {exc.__class__.__name__}") from None
    finally:
        if watchdog is not None:
            watchdog.stop()


class _IdleWatchdog:
    """Cancels the reading task when no chunk arrived for `seconds`.

    Cheaper than a timeout per read (which reschedules a timer for every chunk): progress is one
    assignment, and the timer is re-armed only when it fires.
    """

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._seconds = seconds
        self._last = self._loop.time()
        self.fired = False
        self._handle = self._loop.call_later(seconds, self._check)

    def progress(self) -> None:
        self._last = self._loop.time()

    def _check(self) -> None:
        idle = self._loop.time() - self._last
        if idle >= self._seconds and self._task is not None:
            self.fired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_later(self._seconds - idle, self._check)

    def stop(self) -> None:
        self._handle.cancel()


def file_result(report: IngestReport, entry: FileEntry) -> dict[str, Any]:
    error = entry.error
    return {
        "index": entry.index,
        "name": entry.name,
        "status": "error" if error else entry.status,
        "hash": entry.digest if not error else None,
        "size": entry.size if not error else None,
        "mime": entry.mime if not error else None,
        "category": report.category_of(entry) if not error else None,
        "url": f"/files/{entry.digest}" if not error else None,
        "error": {"code": error.code, "message": error.message} if error else None,
    }


def report_body(report: IngestReport) -> dict[str, Any]:
    results = [file_result(report, entry) for entry in report.entries]
    return {
        "results": results,
        "stored": sum(1 for e in report.entries if e.ok and e.status == STORED),
        "duplicates": sum(1 for e in report.entries if e.ok and e.status == DUPLICATE),
        "failed": sum(1 for e in report.entries if not e.ok),
    }


def report_status(report: IngestReport) -> int:
    """200 if all succeeded; a lone failed file gives its own status; otherwise 207."""
    failed = [e for e in report.entries if e.error is not None]
    if not failed:
        return 200
    if len(report.entries) == 1:
        return status_for(failed[0].error)  # type: ignore[arg-type]
    return 207


async def ingest(request: web.Request) -> web.Response:
    if "async" in request.query:
        from rhinobox.http.jobs import ingest_async, wants_async  # jobs builds on this module

        if wants_async(request):
            return await ingest_async(request)
    report = await request.app[PIPELINE].ingest(request.headers.get("Content-Type"), body_chunks(request))
    request.app[METRICS].observe_ingest(report)
    return web.json_response(report_body(report), status=report_status(report))
