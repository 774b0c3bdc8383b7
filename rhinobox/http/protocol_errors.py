"""Connection-level faults aiohttp handles before any handler runs: malformed requests and slow headers.

aiohttp answers parser faults itself in text/plain, echoing the offending bytes, and logs each as an
ERROR with a traceback, before any middleware or auth runs: any client could fill the error log. Here
they get the documented JSON error shape with a fixed message, the connection is closed, and one
WARNING line names the client and the kind of fault.

aiohttp also bounds nothing about how long a request's line and headers may take to arrive (a client
trickling a byte a minute keeps its connection for the hour-long keep-alive timeout). Here they must be
complete within `header_timeout` seconds (nginx's `client_header_timeout`): counted from the accept for
a connection's first request, from its first byte for a later one; past it the client gets a JSON 408
`header_timeout` (or, having sent nothing at all, just a closed connection). A later request's first
bytes may come in the same read as the end of the one before (pipelined, or sent before the answer),
so each read is fed to the parser in two calls, the last byte alone: the parser says when a request
is complete, not where, and the last byte tells whether the read ended inside the next request's head.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from rhinobox.http.errors import error_body

__all__ = ["HEADER_TIMEOUT_CODE", "JsonErrorRequestHandler", "JsonErrorServer", "serve_json_errors"]

log = logging.getLogger(__name__)

# aiohttp's status for a parser fault -> (code, message); anything else is a 400 `bad_request`.
_FAULTS: Final[dict[int, tuple[str, str]]] = {
    400: ("bad_request", "the request is not valid HTTP/1.1"),
    413: ("request_too_large", "the request line or headers are too large"),
    431: ("request_too_large", "the request headers are too large"),
    501: ("not_implemented", "the request uses an HTTP feature this server does not implement"),
}
HEADER_TIMEOUT_CODE: Final = "header_timeout"


def _content_length(message: object) -> int | None:
    """A parsed request's Content-Length, None for a chunked body (or a parser fault, which has no headers)."""
    headers = getattr(message, "headers", None)
    if headers is None or getattr(message, "chunked", False):
        return None
    value = headers.get(hdrs.CONTENT_LENGTH, "0")
    return int(value) if value.isdigit() else None


def _header_timeout_answer(seconds: float) -> bytes:
    """The whole 408 answer, written straight to the socket: no request exists to answer through aiohttp."""
    body = json.dumps(
        error_body(HEADER_TIMEOUT_CODE, f"the request line and headers did not arrive within {seconds:g} s")
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler: its own errors in the JSON error shape, and a deadline for headers."""

    __slots__ = (
        "_body",
        "_body_length",
        "_header_answer",
        "_header_bytes",
        "_header_deadline",
        "_header_timeout",
    )

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_answer = _header_timeout_answer(header_timeout)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = False  # whether the pending request has sent anything (else: close silently)
        self._body: StreamReader | None = None  # the body the parser is filling, until it is complete
        self._body_length: int | None = None  # its Content-Length (None: chunked)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()  # nginx too counts the first request's headers from the accept

    def data_received(self, data: bytes) -> None:
        if self._upgraded or self._payload_parser is not None or self._body_goes_past(data):
            super().data_received(data)  # no request head in these bytes
            return
        parsed = self._request_count
        in_head = self._feed_to_boundary(data)
        if self._request_count != parsed:  # a request line and its headers are complete
            self._disarm_header_deadline()
        if in_head:  # a request has begun and its headers are not complete
            if self._header_deadline is None:
                self._arm_header_deadline()
            self._header_bytes = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_deadline()
        self._body = None
        super().connection_lost(exc)

    def _body_goes_past(self, data: bytes) -> bool:
        """Whether `data` is all body: a Content-Length body with more bytes to come than `data` holds."""
        body, length = self._body, self._body_length
        return body is not None and length is not None and length - body.total_raw_bytes > len(data)

    def _feed_to_boundary(self, data: bytes) -> bool:
        """Parse `data`; whether it ended inside a request's head. The last byte goes alone: had the request
        before it ended with the byte before, this byte begins the next one. (A resume of a paused parser
        feeds nothing: what it held is not known, so no head is assumed.)"""
        if len(data) > 1:
            self._feed(data[:-1])
        elif not data:
            self._feed(data)
            return False
        count, complete = self._request_count, self._body is None
        self._feed(data[-1:])
        return self._body is None and complete and self._request_count == count

    def _feed(self, data: bytes) -> None:
        """Parse `data`, keeping the body of the newest request until the parser has all of it."""
        count = self._request_count
        super().data_received(data)
        if self._request_count != count and self._messages:
            message, self._body = self._messages[-1]
            self._body_length = _content_length(message)
        if self._body is not None and self._body.is_eof():
            self._body = None

    def _arm_header_deadline(self) -> None:
        if self._header_timeout > 0:
            self._header_bytes = False
            self._header_deadline = self._loop.call_later(self._header_timeout, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.transport is None or self._force_close:
            return
        if self._request_in_progress or self._messages:  # a pipelined head waits behind requests being answered
            self._header_deadline = self._loop.call_later(self._header_timeout, self._header_deadline_passed)
            return
        if self._header_bytes:
            log.warning("closed a connection from %s: no complete headers in %g s", self._peer(), self._header_timeout)
            self.transport.write(self._header_answer)
        self.force_close()  # the transport sends what was written, then closes

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500 and status != 501:
            return super().handle_error(request, status, exc, message)  # our own fault: keep the traceback
        log.warning(
            "refused a malformed request from %s: %s (%d)",
            request.remote,
            exc.__class__.__name__ if exc is not None else "protocol error",
            status,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started, cannot send the error")
        code, text = _FAULTS.get(status, _FAULTS[400])
        response = web.json_response(error_body(code, text), status=status)
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """A `web.Server` whose connections use `JsonErrorRequestHandler` (`header_timeout`: see `serve_json_errors`)."""

    header_timeout: float

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)


def serve_json_errors(server: web.Server, header_timeout: float) -> JsonErrorServer:
    """`server`, now handing its connections to `JsonErrorRequestHandler` (0: no header deadline).

    aiohttp's runner builds the `Server` itself; only its connection handler differs, so the class is swapped.
    """
    server.__class__ = JsonErrorServer
    assert isinstance(server, JsonErrorServer)
    server.header_timeout = header_timeout
    return server
