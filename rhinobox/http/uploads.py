"""Resumable uploads over HTTP: tus 1.0 (with its extensions) and the IETF draft, on the same URLs.

Both speak to the one upload state machine in `rhinobox.ingest.resumable`; this module only maps
headers to calls and results to headers. `GET /uploads/{id}` (not part of either protocol) answers
an upload's state and, once complete, the same JSON object as one entry of an ingest answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import hdrs, web

from rhinobox.errors import InvalidUploadHeader, RhinoBoxError, UploadFailed, UploadNotFound, UploadOffsetMismatch
from rhinobox.http.bodies import body_chunks, refuse_encoded_body
from rhinobox.http.errors import error_response
from rhinobox.http.keys import PIPELINE, SETTINGS, UPLOADS
from rhinobox.http.results import file_result
from rhinobox.http.upload_headers import (
    CHECKSUM_ALGORITHMS,
    TUS_VERSION,
    Protocol,
    encode_metadata,
    parse_checksum,
    parse_declared_digest,
    parse_metadata,
    parse_offset,
    parse_upload_complete,
    parse_upload_length,
    protocol_of,
)
from rhinobox.ingest.resumable import ResumableUploads, UploadStatus
from rhinobox.ingest.upload_records import UploadDirectory, is_upload_id
from rhinobox.settings import FsyncMode

__all__ = [
    "RESULT_HEADER",
    "UPLOADS_PATH",
    "create_upload",
    "delete_upload",
    "get_upload",
    "head_upload",
    "options_uploads",
    "patch_upload",
    "post_to_upload",
    "uploads_ctx",
]

UPLOADS_PATH: Final = "/uploads"
RESULT_HEADER: Final = "RhinoBox-Result"  # the completed file's result, as compact JSON
TUS_EXTENSIONS: Final = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration"
TUS_CONTENT_TYPE: Final = "application/offset+octet-stream"
DRAFT_CONTENT_TYPES: Final = ("application/partial-upload", TUS_CONTENT_TYPE)
METHOD_OVERRIDE: Final = "X-HTTP-Method-Override"  # tus-js-client's overridePatchMethod sends POST + this
MAX_SWEEP_INTERVAL: Final = 60.0  # expired uploads are reclaimed at most this late (or a quarter of the expiry)
Handler = Callable[[web.Request, Protocol], Awaitable[web.StreamResponse]]


async def uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    """Resumable uploads of the data directory, and the sweeper that reclaims expired ones."""
    settings = app[SETTINGS]
    directory = UploadDirectory(settings.data_dir, durable=settings.fsync is FsyncMode.ALWAYS)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, directory.open)
    uploads = ResumableUploads(
        app[PIPELINE].resources,
        directory,
        expiry_seconds=settings.upload_expiry,
        max_open=settings.max_open_uploads,
        describe=file_result,
    )
    app[UPLOADS] = uploads
    await uploads.sweep()  # what expired while the server was down
    interval = min(MAX_SWEEP_INTERVAL, max(0.5, settings.upload_expiry / 4))
    sweeper = asyncio.create_task(uploads.sweep_forever(interval))
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


def _uploads(request: web.Request) -> ResumableUploads:
    return request.app[UPLOADS]


def _upload_id(request: web.Request) -> str:
    upload_id = request.match_info["id"]
    if not is_upload_id(upload_id):
        raise UploadNotFound()
    return upload_id


def _speaking(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Detect the protocol, and answer errors in the JSON shape with the protocol's headers."""

    async def answer(request: web.Request) -> web.StreamResponse:
        protocol = Protocol.TUS
        try:
            protocol = protocol_of(request.headers)
            return await handler(request, protocol)
        except RhinoBoxError as exc:
            response = error_response(exc)
            _protocol_headers(response, protocol)
            if isinstance(exc, UploadOffsetMismatch):
                response.headers["Upload-Offset"] = str(exc.expected)
            if request.can_read_body and not request.content.is_eof():
                response.force_close()  # the rest of a refused body is not read
            return response

    return answer


def _protocol_headers(response: web.StreamResponse, protocol: Protocol) -> None:
    if protocol is Protocol.TUS:
        response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers[hdrs.CACHE_CONTROL] = "no-store"


def _status_headers(response: web.StreamResponse, status: UploadStatus, protocol: Protocol) -> None:
    _protocol_headers(response, protocol)
    response.headers["Upload-Offset"] = str(status.offset)
    response.headers["Upload-Expires"] = email.utils.formatdate(status.expires, usegmt=True)
    record = status.record
    if record.length is not None:
        response.headers["Upload-Length"] = str(record.length)
    elif protocol is Protocol.TUS:
        response.headers["Upload-Defer-Length"] = "1"
    if protocol is Protocol.DRAFT:
        response.headers["Upload-Complete"] = "?1" if status.complete else "?0"
    if record.result is not None:
        response.headers[hdrs.CONTENT_LOCATION] = str(record.result["url"])
        response.headers[RESULT_HEADER] = json.dumps(record.result, separators=(",", ":"))  # ASCII-escaped


async def options_uploads(request: web.Request) -> web.Response:
    """tus discovery: the version, extensions, largest upload and checksum algorithms."""
    response = web.Response(status=204)
    response.headers.update(
        {
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(_uploads(request).max_length),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        }
    )
    return response


def _check_content_type(request: web.Request, protocol: Protocol) -> None:
    content_type = request.headers.get(hdrs.CONTENT_TYPE, "").split(";")[0].strip().lower()
    allowed = (TUS_CONTENT_TYPE,) if protocol is Protocol.TUS else DRAFT_CONTENT_TYPES
    if content_type not in allowed:
        raise InvalidUploadHeader(f"the body's Content-Type must be {allowed[0]}")


def _has_body(request: web.Request) -> bool:
    return bool(request.content_length) or request.headers.get(hdrs.TRANSFER_ENCODING) is not None


@_speaking
async def create_upload(request: web.Request, protocol: Protocol) -> web.StreamResponse:
    """Creation (and creation-with-upload): a new upload, complete at once if its content is known."""
    refuse_encoded_body(request)
    completes = parse_upload_complete(request.headers) if protocol is Protocol.DRAFT else None
    length = parse_upload_length(request.headers, required=protocol is Protocol.TUS)
    metadata = parse_metadata(request.headers.get("Upload-Metadata"))
    digest = parse_declared_digest(request.headers, metadata)
    with_body = _has_body(request)
    if with_body and protocol is Protocol.TUS:
        _check_content_type(request, protocol)
    if length is None and completes and not with_body:
        length = 0  # a complete, empty representation: refused as an empty file
    uploads = _uploads(request)
    status = await uploads.create(length, metadata, digest)
    if with_body and not status.complete:
        status = await _append(request, uploads, status.record.id, 0, protocol, completes=bool(completes))
    response = web.Response(status=201)
    response.headers[hdrs.LOCATION] = f"{UPLOADS_PATH}/{status.record.id}"
    _status_headers(response, status, protocol)
    return response


@_speaking
async def head_upload(request: web.Request, protocol: Protocol) -> web.StreamResponse:
    status = await _status(request)
    if status.record.error is not None:
        raise UploadFailed(f"the upload failed: {status.record.error.get('message', '')}")
    response = web.Response(status=200)
    _status_headers(response, status, protocol)
    if status.record.metadata:
        response.headers["Upload-Metadata"] = encode_metadata(status.record.metadata)
    return response


@_speaking
async def patch_upload(request: web.Request, protocol: Protocol) -> web.StreamResponse:
    """Append the body at `Upload-Offset`; the answer that completes the upload carries its result."""
    return await _patch(request, protocol)


async def _patch(request: web.Request, protocol: Protocol) -> web.StreamResponse:
    upload_id = _upload_id(request)
    offset = parse_offset(request.headers)
    uploads = _uploads(request)
    current = await _status(request)
    if current.complete:  # e.g. completed at creation from its digest: nothing to send
        response = web.Response(status=204)
        _status_headers(response, current, protocol)
        if _has_body(request):
            response.force_close()
        return response
    _check_content_type(request, protocol)
    completes = parse_upload_complete(request.headers) if protocol is Protocol.DRAFT else None
    status = await _append(request, uploads, upload_id, offset, protocol, completes=bool(completes))
    response = web.Response(status=204)
    _status_headers(response, status, protocol)
    return response


async def _append(
    request: web.Request,
    uploads: ResumableUploads,
    upload_id: str,
    offset: int,
    protocol: Protocol,
    *,
    completes: bool,
) -> UploadStatus:
    length = parse_upload_length(request.headers, required=False)
    checksum = parse_checksum(request.headers)
    return await uploads.append(
        upload_id,
        offset,
        body_chunks(request),
        checksum=checksum,
        length=length,
        completes=completes,
        body_size=request.content_length,
    )


@_speaking
async def delete_upload(request: web.Request, protocol: Protocol) -> web.StreamResponse:
    """Termination: the upload and its bytes go at once."""
    await _uploads(request).terminate(_upload_id(request))
    response = web.Response(status=204)
    _protocol_headers(response, protocol)
    return response


async def post_to_upload(request: web.Request) -> web.StreamResponse:
    """POST with `X-HTTP-Method-Override: PATCH` (or DELETE), for clients behind proxies that drop PATCH."""
    method = request.headers.get(METHOD_OVERRIDE, "").strip().upper()
    if method == "PATCH":
        return await patch_upload(request)
    if method == "DELETE":
        return await delete_upload(request)
    raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "PATCH", "DELETE", "OPTIONS"])


async def get_upload(request: web.Request) -> web.Response:
    """The upload's state as JSON (no protocol headers needed): offset, length, and its result or error."""
    status = await _status(request)
    record = status.record
    body: dict[str, Any] = {
        "id": record.id,
        "offset": status.offset,
        "length": record.length,
        "complete": status.complete,
        "expires": datetime.fromtimestamp(status.expires, UTC).isoformat(),
        "metadata": record.metadata,
        "result": record.result,
        "error": record.error,
    }
    return web.json_response(body, headers={hdrs.CACHE_CONTROL: "no-store"})


async def _status(request: web.Request) -> UploadStatus:
    uploads = _uploads(request)
    upload_id = _upload_id(request)
    return await asyncio.get_running_loop().run_in_executor(None, uploads.status, upload_id)
