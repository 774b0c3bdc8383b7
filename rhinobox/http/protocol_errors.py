"""Requests aiohttp's HTTP parser refuses (bad framing, oversized headers, control bytes): a JSON answer, one log line.

aiohttp answers them itself in text/plain, echoing the offending bytes, and logs each as an ERROR with
a traceback, before any middleware or auth runs: any client could fill the error log. Here they get the
documented JSON error shape with a fixed message, the connection is closed, and one WARNING line names
the client and the kind of fault.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from rhinobox.http.errors import error_body

__all__ = ["JsonErrorRequestHandler", "JsonErrorServer"]

log = logging.getLogger(__name__)

# aiohttp's status for a parser fault -> (code, message); anything else is a 400 `bad_request`.
_FAULTS: Final[dict[int, tuple[str, str]]] = {
    400: ("bad_request", "the request is not valid HTTP/1.1"),
    413: ("request_too_large", "the request line or headers are too large"),
    431: ("request_too_large", "the request headers are too large"),
    501: ("not_implemented", "the request uses an HTTP feature this server does not implement"),
}


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors in the JSON error shape without a traceback."""

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
    """A `web.Server` whose connections use `JsonErrorRequestHandler`."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)
