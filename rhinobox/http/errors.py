"""The one place where error codes become HTTP statuses, and the JSON error shape."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from rhinobox.errors import Overloaded, RhinoBoxError

__all__ = ["STATUS_BY_CODE", "error_body", "error_middleware", "error_response", "status_for"]

log = logging.getLogger(__name__)

STATUS_BY_CODE: Final[dict[str, int]] = {
    "not_multipart": 415,
    "unsupported_encoding": 415,
    "malformed_multipart": 400,
    "no_files": 400,
    "too_many_files": 413,
    "file_too_large": 413,
    "field_too_large": 413,
    "empty_file": 422,
    "overloaded": 503,
    "insufficient_storage": 507,
    "storage_error": 500,
    "client_disconnected": 400,
    "upload_timeout": 408,
    "bad_hash": 400,
    "not_found": 404,
    "digest_mismatch": 422,
    "invalid_rules": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "method_not_allowed": 405,
    "range_not_satisfiable": 416,
    "invalid_parameter": 400,
    "invalid_body": 400,
    "too_many_hashes": 413,
    "precondition_failed": 412,
    "expectation_failed": 417,
    "job_not_found": 404,
    "page_not_built": 503,
    "upload_not_found": 404,
    "upload_offset_mismatch": 409,
    "upload_locked": 423,
    "upload_too_long": 413,
    "invalid_upload_header": 400,
    "unsupported_protocol_version": 412,
    "checksum_mismatch": 460,
    "unsupported_checksum": 400,
    "too_many_open_uploads": 503,
    "upload_failed": 409,
    "internal": 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_for(error: RhinoBoxError) -> int:
    return STATUS_BY_CODE.get(error.code, 500)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(error: RhinoBoxError) -> web.Response:
    response = web.json_response(error_body(error.code, error.message), status=status_for(error))
    if isinstance(error, Overloaded):
        response.headers["Retry-After"] = str(error.retry_after_seconds)
    return response


_HTTP_CODES: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn domain errors and aiohttp's own HTTP errors into the JSON error shape."""
    try:
        return await handler(request)
    except RhinoBoxError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = web.json_response(error_body(code, exc.reason), status=exc.status)
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response(error_body("internal", "internal server error"), status=500)
