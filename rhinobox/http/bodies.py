"""Request bodies: streamed in large chunks with an idle watchdog, or small JSON bodies read whole with a cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from rhinobox.errors import ClientDisconnected, RhinoBoxError, UnsupportedEncoding, UploadTimeout
from rhinobox.http.errors import error_body

__all__ = ["BODY_IDLE_SECONDS", "READ_CHUNK", "body_chunks", "expect_continue", "read_json", "refuse_encoded_body"]

READ_CHUNK: Final = 256 * 1024
# A client that sends nothing for this long is cut off, so a stalled upload cannot hold buffers and
# hash pins (which a delete of the same content waits for) indefinitely.
BODY_IDLE_SECONDS: Final = 60.0
IDENTITY_ENCODINGS: Final = frozenset({"", "identity"})


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
    """The request body in large chunks; refused at once if compressed (see `refuse_encoded_body`)."""
    refuse_encoded_body(request)
    return _chunks(request)


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body; a vanished client becomes `ClientDisconnected`, a silent one `UploadTimeout`."""
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
