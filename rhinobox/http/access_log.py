"""Request ids and the access log: one JSON line per request, and the id in every answer's `X-Request-ID`.

An id that nginx (or another proxy) sent is kept, so both logs of one request share it; otherwise
one is made here. While a handler runs, the id is also in `current_request_id` so every log record
written for that request carries it (see `rhinobox.logs`).
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from rhinobox.http.errors import Handler
from rhinobox.logs import FIELDS, current_request_id

__all__ = [
    "ACCESS_LOGGER",
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "JsonAccessLogger",
    "add_request_id_header",
    "request_id_middleware",
    "route_of",
]

REQUEST_ID_HEADER: Final = "X-Request-ID"
ACCESS_LOGGER: Final = "rhinobox.access"
# What we accept from a client or proxy: short and printable, so it cannot forge log lines.
_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ID_BYTES: Final = 16
UNMATCHED_ROUTE: Final = "unmatched"

REQUEST_ID = web.RequestKey("request_id", str)


def new_request_id(offered: str | None) -> str:
    """The proxy's id if it is well formed, else a fresh random one."""
    if offered is not None and _CLIENT_ID.fullmatch(offered):
        return offered
    return secrets.token_hex(ID_BYTES)


def route_of(request: web.Request) -> str:
    """The matched route's canonical path (`/files/{hash}`), never the raw path: bounded for metrics."""
    try:
        resource = request.match_info.route.resource
    except AssertionError:  # aiohttp answered before routing (a malformed request): no match info
        return UNMATCHED_ROUTE
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id (outermost middleware, so even auth and error answers carry it)."""
    request_id = new_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    token = current_request_id.set(request_id)
    try:
        return await handler(request)
    finally:
        current_request_id.reset(token)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: runs for every answer, also for handlers that stream their own response."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp calls `log` once the answer is fully sent, so duration and size cover the whole body."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = route_of(request) if isinstance(request, web.Request) else UNMATCHED_ROUTE
        self.logger.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status,
            extra={
                FIELDS: {
                    "request_id": request.get(REQUEST_ID),
                    "method": request.method,
                    "path": request.path,
                    "route": route,
                    "status": response.status,
                    "bytes_sent": response.body_length,
                    "bytes_received": request.content.total_bytes,
                    "duration_ms": round(time * 1000, 3),
                    "remote": request.remote,
                    "forwarded_for": request.headers.get("X-Forwarded-For"),
                    "user_agent": request.headers.get("User-Agent"),
                }
            },
        )
