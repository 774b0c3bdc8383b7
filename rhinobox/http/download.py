"""Reading blobs back: `GET|HEAD /files/{hash}`, the bytes with Range, ETag and a download name.

A blob is immutable and named by its hash, so the hash is its strong ETag and it may be cached
forever. Conditions and the byte range are decided here, against the hash; aiohttp's FileResponse
then only sends the bytes (sendfile). Nothing in an answer reveals where a blob lives on disk.
"""

from __future__ import annotations

import asyncio
import unicodedata
import urllib.parse
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import ETag
from multidict import CIMultiDict

from rhinobox.blobs.digest import require_digest
from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import BlobInfo
from rhinobox.errors import BlobNotFound, PreconditionFailed, RangeNotSatisfiable
from rhinobox.http.errors import error_response
from rhinobox.http.keys import CATALOG, SETTINGS, STORE
from rhinobox.http.params import flag_param
from rhinobox.http.ranges import ByteRange, if_match, if_none_match, requested_range
from rhinobox.ingest.names import clean_filename

__all__ = ["CACHE_FOREVER", "BlobFileResponse", "content_disposition", "get_file", "is_active_content"]

CACHE_FOREVER: Final = "public, max-age=31536000, immutable"
SANDBOX: Final = "sandbox"
SEND_CHUNK: Final = 256 * 1024
# Types a browser would run script in if shown inline on our origin.
ACTIVE_TYPES: Final = frozenset(
    {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml", "text/xsl"}
)
# Request headers FileResponse would evaluate against its own mtime/size validator: decided here instead.
_DECIDED_HERE: Final = (
    hdrs.IF_MATCH,
    hdrs.IF_NONE_MATCH,
    hdrs.IF_MODIFIED_SINCE,
    hdrs.IF_UNMODIFIED_SINCE,
    hdrs.IF_RANGE,
    hdrs.RANGE,
    hdrs.ACCEPT_ENCODING,  # blobs have no precompressed siblings; spare the lookups
)
_SERVED: Final = frozenset({200, 206, 304})
# Headers describing the blob: dropped from any other answer a BlobFileResponse ends up sending.
_BLOB_ONLY: Final = (
    hdrs.ETAG,
    hdrs.CACHE_CONTROL,
    hdrs.CONTENT_TYPE,
    hdrs.CONTENT_DISPOSITION,
    hdrs.ACCEPT_RANGES,
    hdrs.LAST_MODIFIED,
    hdrs.CONTENT_RANGE,
)
_ASCII_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-()[]+,=@")
_ATTR_CHARS: Final = "!#$&+-.^_`|~"  # RFC 5987 attr-char beyond ALPHA / DIGIT


async def get_file(request: web.Request) -> web.StreamResponse:
    digest = require_digest(request.match_info["hash"])
    blob = await request.app[CATALOG].get_blob(digest)
    if blob is None:
        raise BlobNotFound()
    headers = await _representation_headers(request, blob)
    if not if_match(request, digest):
        raise PreconditionFailed()
    if if_none_match(request, digest):
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != hdrs.CONTENT_TYPE})
    accel = request.app[SETTINGS].accel_redirect
    if accel:
        # nginx sends the bytes (and handles Range) from its internal location aliasing <data_dir>/blobs/.
        headers["X-Accel-Redirect"] = f"{accel.rstrip('/')}/{request.app[STORE].relative_name(digest)}"
        return web.Response(status=200, headers=headers)
    try:
        byte_range = requested_range(request, digest, blob.size)
    except RangeNotSatisfiable as exc:
        response = error_response(exc)
        response.headers[hdrs.CONTENT_RANGE] = f"bytes */{exc.size}"
        return response
    store = request.app[STORE]
    path = await asyncio.get_running_loop().run_in_executor(None, _existing_local_path, store, digest)
    if path is not None:
        return BlobFileResponse(path, digest, byte_range, headers)
    return await _stream_blob(request, store, blob, byte_range, headers)


def _existing_local_path(store: BlobStore, digest: str) -> Path | None:
    """The blob's file if the store has local files; BlobNotFound if it is gone (a DELETE won the race).

    Checked here, not left to FileResponse: its own 404 would be a bare answer, after the handler.
    """
    path = store.local_path(digest)
    if path is None:
        return None
    try:
        path.stat()
    except FileNotFoundError:
        raise BlobNotFound() from None
    return path


class BlobFileResponse(web.FileResponse):
    """A FileResponse whose ETag is the content hash, serving exactly the range decided by the handler."""

    def __init__(self, path: Path, digest: str, byte_range: ByteRange | None, headers: CIMultiDict[str]) -> None:
        super().__init__(path, chunk_size=SEND_CHUNK, headers=headers)
        self._digest = digest
        self._byte_range = byte_range

    @property
    def etag(self) -> ETag | None:
        return super().etag

    @etag.setter
    def etag(self, value: ETag | str | None) -> None:
        # FileResponse sets an mtime/size tag; a content-addressed blob's tag is its hash, always.
        self.headers[hdrs.ETAG] = f'"{self._digest}"'

    def set_status(self, status: int, reason: str | None = None) -> None:
        super().set_status(status, reason)
        if status not in _SERVED:
            # FileResponse answers 403/404 itself when the file vanished after the handler looked
            # (a DELETE in between): such an answer must not carry the blob's validator or be cached.
            for name in _BLOB_ONLY:
                self.headers.popall(name, None)
            self.headers[hdrs.CACHE_CONTROL] = "no-store"

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        headers = CIMultiDict(request.headers)
        for name in _DECIDED_HERE:
            headers.popall(name, None)
        if self._byte_range is not None:
            start, end = self._byte_range
            headers[hdrs.RANGE] = f"bytes={start}-{end - 1}"
        return await super().prepare(request.clone(headers=headers))


async def _stream_blob(
    request: web.Request, store: BlobStore, blob: BlobInfo, byte_range: ByteRange | None, headers: CIMultiDict[str]
) -> web.StreamResponse:
    """For stores without local files: stream `read_range` with the same headers FileResponse would send."""
    start, end = byte_range or (0, blob.size)
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    response.headers[hdrs.ACCEPT_RANGES] = "bytes"
    response.content_length = end - start
    if byte_range is not None:
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end - 1}/{blob.size}"
    if request.method == hdrs.METH_HEAD:
        if await asyncio.get_running_loop().run_in_executor(None, store.size, blob.digest) is None:
            raise BlobNotFound()  # as GET would say: the catalog row outlived the bytes
        await response.prepare(request)
        return response
    chunks = store.read_range(blob.digest, start, end)
    try:
        first = await anext(chunks, b"")  # BlobNotFound surfaces here, before any header is sent
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; nothing left to tell it
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    return response


async def _representation_headers(request: web.Request, blob: BlobInfo) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    headers[hdrs.CONTENT_TYPE] = blob.mime
    headers[hdrs.ETAG] = f'"{blob.digest}"'
    headers[hdrs.CACHE_CONTROL] = CACHE_FOREVER
    headers[hdrs.ACCEPT_RANGES] = "bytes"
    headers["X-Content-Type-Options"] = "nosniff"
    if is_active_content(blob.mime):
        headers["Content-Security-Policy"] = SANDBOX
    name = await _attachment_name(request, blob)
    if name is not None:
        headers[hdrs.CONTENT_DISPOSITION] = content_disposition(name)
    return headers


async def _attachment_name(request: web.Request, blob: BlobInfo) -> str | None:
    """The name for `Content-Disposition: attachment`, or None when the blob is to be shown inline."""
    name = request.query.get("name")
    download = flag_param(request.query, "download")
    if name is not None and name.strip():
        return clean_filename(name)
    if not download:
        return None
    first = await request.app[CATALOG].list_uploads(blob.digest, limit=1)
    return first[0].name if first else blob.digest


def is_active_content(mime: str) -> bool:
    """True for types a browser renders as a document that can run script (HTML, SVG, XML)."""
    mime = mime.split(";", 1)[0].strip().lower()
    return mime in ACTIVE_TYPES or mime.endswith("+xml")


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback and the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1] or name
    folded = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    fallback = "".join(ch if ch in _ASCII_SAFE else "_" for ch in folded).strip() or "download"
    encoded = urllib.parse.quote(base, safe=_ATTR_CHARS)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
