"""Request bodies: streamed in large chunks under a pace watchdog, or small JSON bodies read whole with a cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from rhinobox.errors import ClientDisconnected, RhinoBoxError, UnsupportedEncoding, UploadTimeout
from rhinobox.http.errors import error_body
from rhinobox.http.keys import SETTINGS
from rhinobox.settings import Settings

__all__ = ["READ_CHUNK", "BodyPace", "body_chunks", "expect_continue", "read_json", "refuse_encoded_body"]

READ_CHUNK: Final = 256 * 1024
IDENTITY_ENCODINGS: Final = frozenset({"", "identity"})


@dataclass(frozen=True, slots=True)
class BodyPace:
    """How slowly an upload body may arrive before the client is cut off with 408 `upload_timeout`.

    A client that stalls, or trickles (a byte every 59 s defeats an idle timeout alone), would otherwise
    hold its buffer, spool file and hash pins (which a delete of the same content waits for) for ever.
    """

    idle_seconds: float  # no byte for this long (nginx's `client_body_timeout`)
    min_rate: int  # bytes per second, averaged over each `idle_seconds` window; 0: no minimum

    @classmethod
    def of(cls, settings: Settings) -> BodyPace:
        return cls(settings.body_timeout, settings.body_min_rate)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` as aiohttp does it; any other expectation is a JSON 417 that does not echo it."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None
    if expect.strip().lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer itself has not started yet
        return None
    response = web.json_response(
        error_body("expectation_failed", "only `Expect: 100-continue` is supported"), status=417
    )
    response.force_close()  # the body that may follow is not read
    return response


def refuse_encoded_body(request: web.Request) -> None:
    """Compressed bodies are refused: aiohttp would unpack them past every size limit (a 100 KB gzip bomb
    is 100 MiB), and nginx's `client_max_body_size` counts the compressed bytes."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    if encoding is not None and encoding.strip().lower() not in IDENTITY_ENCODINGS:
        raise UnsupportedEncoding(f"Content-Encoding {encoding[:40]!r} is not accepted: send the body uncompressed")


def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in large chunks, at the app's `BodyPace`; refused at once if compressed."""
    refuse_encoded_body(request)
    return _chunks(request, BodyPace.of(request.app[SETTINGS]))


async def _chunks(request: web.Request, pace: BodyPace) -> AsyncIterator[bytes]:
    """The body; a vanished client becomes `ClientDisconnected`, a stalled or trickling one `UploadTimeout`."""
    content = request.content
    watchdog: _PaceWatchdog | None = None
    try:
        # What already arrived (usually all of a small upload) is taken without arming a timer:
        # a timer per request is a few percent of a single-file request's CPU.
        while chunk := content.read_nowait(READ_CHUNK):
            yield chunk
        if content.at_eof():
            return
        watchdog = _PaceWatchdog(pace)
        while True:
            watchdog.waiting()
            chunk = await content.read(READ_CHUNK)
            if not chunk:
                break
            watchdog.progress(len(chunk))
            yield chunk
    except asyncio.CancelledError:
        if watchdog is not None and watchdog.verdict:
            raise UploadTimeout(watchdog.verdict) from None
        raise
    except (ConnectionError, aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError) as exc:
        raise ClientDisconnected(f"upload interrupted: {exc.__class__.__name__}") from None
    finally:
        if watchdog is not None:
            watchdog.stop()


class _PaceWatchdog:
    """Cancels the reading task when it waited `pace.idle_seconds` for a chunk, or when waiting that long
    in all brought fewer than `pace.min_rate` bytes per second (as Apache's mod_reqtimeout `MinRate`).

    Only time spent waiting for the client counts: a server busy with the bytes it has (hashing, a full
    queue) does not make its client look slow. Cheaper than a timeout per read (which reschedules a
    timer for every chunk): a read costs a few assignments, and the timer is re-armed only when it fires.
    """

    def __init__(self, pace: BodyPace) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._pace = pace
        self._wait_since: float | None = None  # when the current wait for a chunk began; None: not waiting
        self._waited = 0.0  # seconds spent waiting in this window, not counting the current wait
        self._window_bytes = 0
        self.verdict = ""  # why the task was cancelled; empty while it was not
        self._handle = self._loop.call_later(pace.idle_seconds, self._check)

    def waiting(self) -> None:
        self._wait_since = self._loop.time()

    def progress(self, size: int) -> None:
        if self._wait_since is not None:
            self._waited += self._loop.time() - self._wait_since
            self._wait_since = None
        self._window_bytes += size

    def _check(self) -> None:
        window = self._pace.idle_seconds
        if self._wait_since is not None:  # cut only while waiting: the task is then inside `content.read`
            now = self._loop.time()
            idle = now - self._wait_since
            waited = self._waited + idle
            if idle >= window:
                self._cut(f"no upload data for {window:g} s")
                return
            if waited >= window:
                rate = self._window_bytes / waited
                if rate < self._pace.min_rate:
                    self._cut(f"the upload arrived at {rate:.0f} bytes/s, below the minimum of {self._pace.min_rate}")
                    return
                self._wait_since, self._waited, self._window_bytes = now, 0.0, 0
            else:
                window -= max(idle, waited)
        self._handle = self._loop.call_later(window, self._check)

    def _cut(self, verdict: str) -> None:
        if self._task is not None:
            self.verdict = verdict
            self._task.cancel()

    def stop(self) -> None:
        self._handle.cancel()


async def read_json(
    request: web.Request, max_bytes: int, *, too_large: type[RhinoBoxError], invalid: type[RhinoBoxError]
) -> object:
    """The body parsed as JSON; `too_large` past `max_bytes` (checked before and while reading), else `invalid`."""
    message = f"the body is limited to {max_bytes} bytes"
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(message)
    raw = bytearray()
    async for chunk in body_chunks(request):  # read(n) may return less than n: read to the end
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large(message)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"body is not JSON: {exc}") from None
    except ValueError as exc:
        # An integer of more than 4,300 digits (Python's int conversion limit) in otherwise valid JSON.
        raise invalid(f"body holds a number too large to read: {str(exc)[:80]}") from None
    except RecursionError:
        # Nesting deeper than the parser's recursion limit (`[[[[...`, a few KB suffice).
        raise invalid("body is nested too deeply") from None
