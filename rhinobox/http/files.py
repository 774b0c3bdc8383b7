"""Reading blobs back: `GET|HEAD /files/{hash}`, `GET /files/{hash}/meta`, `GET /files`, `DELETE /files/{hash}`.

A blob is immutable and named by its hash, so the hash is its strong ETag and it may be cached
forever. Conditions and the byte range are decided here, against the hash; aiohttp's FileResponse
then only sends the bytes (sendfile). Nothing in an answer reveals where a blob lives on disk.
"""

from __future__ import annotations

import asyncio
import unicodedata
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import ETag
from multidict import CIMultiDict

from rhinobox.blobs.digest import require_digest
from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import MAX_PAGE, BlobInfo, BlobQuery, StoredUpload
from rhinobox.errors import BlobNotFound, InvalidParameter, PreconditionFailed, RangeNotSatisfiable
from rhinobox.http.errors import error_response
from rhinobox.http.keys import CATALOG, PIPELINE, SETTINGS, STORE
from rhinobox.ingest.names import clean_filename

__all__ = [
    "CACHE_FOREVER",
    "BlobFileResponse",
    "content_disposition",
    "delete_file",
    "file_meta",
    "get_file",
    "is_active_content",
    "list_files",
    "parse_byte_range",
]

CACHE_FOREVER: Final = "public, max-age=31536000, immutable"
SANDBOX: Final = "sandbox"
DEFAULT_LIMIT: Final = 100
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
# The largest whole-number query parameter (SQLite's INTEGER overflows past it). Longer digit strings
# are refused before int() sees them: it raises past 4,300 digits.
MAX_INT: Final = 2**63 - 1
_MAX_DIGITS: Final = len(str(MAX_INT))
_LISTING_PARAMS: Final = frozenset(
    {"category", "mime", "name", "min_size", "max_size", "since", "until", "limit", "cursor"}
)
_TRUE: Final = frozenset({"1", "true", "yes"})
_FALSE: Final = frozenset({"0", "false", "no", ""})
_ASCII_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-()[]+,=@")
_ATTR_CHARS: Final = "!#$&+-.^_`|~"  # RFC 5987 attr-char beyond ALPHA / DIGIT

ByteRange = tuple[int, int]  # [start, end)


# -- download ----------------------------------------------------------------------------


async def get_file(request: web.Request) -> web.StreamResponse:
    digest = require_digest(request.match_info["hash"])
    blob = await request.app[CATALOG].get_blob(digest)
    if blob is None:
        raise BlobNotFound()
    headers = await _representation_headers(request, blob)
    if not _if_match(request, digest):
        raise PreconditionFailed()
    if _if_none_match(request, digest):
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != hdrs.CONTENT_TYPE})
    accel = request.app[SETTINGS].accel_redirect
    if accel:
        # nginx sends the bytes (and handles Range) from its internal location aliasing <data_dir>/blobs/.
        headers["X-Accel-Redirect"] = f"{accel.rstrip('/')}/{digest[:2]}/{digest}"
        return web.Response(status=200, headers=headers)
    try:
        byte_range = _requested_range(request, digest, blob.size)
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
    download = _flag(request.query, "download")
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


# -- conditions and ranges ---------------------------------------------------------------


def _if_match(request: web.Request, digest: str) -> bool:
    """RFC 9110 13.1.1: strong comparison; absent means true."""
    tags = request.if_match
    if tags is None:
        return True
    return any(tag.value in ("*", digest) and not tag.is_weak for tag in tags)


def _if_none_match(request: web.Request, digest: str) -> bool:
    """RFC 9110 13.1.2: True when the client's copy is current (weak comparison)."""
    tags = request.if_none_match
    return tags is not None and any(tag.value in ("*", digest) for tag in tags)


def _requested_range(request: web.Request, digest: str, size: int) -> ByteRange | None:
    header = request.headers.get(hdrs.RANGE)
    if header is None:
        return None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range.strip() != f'"{digest}"':
        return None  # a stale validator (or a date: we only issue tags): send the whole blob
    return parse_byte_range(header, size)


def parse_byte_range(header: str, size: int) -> ByteRange | None:
    """The one range a `Range` header asks of `size` bytes, as [start, end); None means "send it all".

    Syntax we do not serve (other units, several ranges, malformed specs) is ignored, as RFC 9110
    14.2 allows; a well-formed range that starts past the end raises `RangeNotSatisfiable`. Numbers
    of any length are read exactly as RFC 9110 means them (a start past the end is 416, an end past
    it is clipped), without ever converting more digits than a size can have.
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not _digits(first, allow_empty=True) or not _digits(last, allow_empty=True):
        return None
    if not first:
        if not last:
            return None
        suffix = _bounded(last, size)
        if suffix == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size
    first, last = first.lstrip("0") or "0", last.lstrip("0") or ("0" if last else "")
    if last and (len(last), last) < (len(first), first):
        return None  # last < start, compared as numbers of any length
    start = _bounded(first, size)
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(_bounded(last, size) + 1, size) if last else size
    return start, end


def _digits(text: str, *, allow_empty: bool) -> bool:
    return (allow_empty and text == "") or (text.isascii() and text.isdigit())


def _bounded(digits: str, size: int) -> int:
    """The value of a decimal string, or `size + 1` when it is longer than any number up to `size`."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(size)) else size + 1


# -- metadata and listing ----------------------------------------------------------------


async def file_meta(request: web.Request) -> web.Response:
    digest = require_digest(request.match_info["hash"])
    catalog = request.app[CATALOG]
    blob = await catalog.get_blob(digest)
    if blob is None:
        raise BlobNotFound()
    limit = _limit_param(request.query)
    after = _int_param(request.query, "cursor", minimum=0)
    uploads = await catalog.list_uploads(digest, after=after, limit=limit + 1)
    more = len(uploads) > limit
    uploads = uploads[:limit]
    body = _blob_json(blob)
    body["uploads"] = [_upload_json(u) for u in uploads]
    body["next"] = str(uploads[-1].id) if more else None
    return _json(body)


async def list_files(request: web.Request) -> web.Response:
    query = request.query
    unknown = sorted(set(query) - _LISTING_PARAMS)
    if unknown:
        raise InvalidParameter(f"unknown parameter(s): {', '.join(unknown)}")
    filters = BlobQuery(
        category=_lower(_text_param(query, "category")),
        mime=_lower(_text_param(query, "mime")),
        name=_text_param(query, "name"),
        min_size=_int_param(query, "min_size", minimum=0),
        max_size=_int_param(query, "max_size", minimum=0),
        since=_time_param(query, "since"),
        until=_time_param(query, "until"),
    )
    limit = _limit_param(query)
    before = _int_param(query, "cursor", minimum=1)
    page = await request.app[CATALOG].list_blobs(filters, before=before, limit=limit)
    next_cursor = str(page.next_before) if page.next_before is not None else None
    return _json({"files": [_blob_json(b) for b in page.blobs], "next": next_cursor})


def _blob_json(blob: BlobInfo) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hash": blob.digest,
        "size": blob.size,
        "mime": blob.mime,
        "category": blob.category,
        "first_upload_at": _iso(blob.first_upload_at),
        "last_upload_at": _iso(blob.last_upload_at),
        "upload_count": blob.upload_count,
        "url": f"/files/{blob.digest}",
    }
    if blob.name is not None:
        body["name"] = blob.name
    return body


def _upload_json(upload: StoredUpload) -> dict[str, Any]:
    return {
        "name": upload.name,
        "category": upload.category,
        "hint": upload.hint,
        "comment": upload.comment,
        "claimed_type": upload.claimed_type,
        "uploaded_at": _iso(upload.uploaded_at),
    }


def _json(body: dict[str, Any]) -> web.Response:
    response = web.json_response(body)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _text_param(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None  # categories and detected types are lowercase


def _int_param(query: Mapping[str, str], name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidParameter(f"{name} must be a whole number, got {raw[:40]!r}")
    maximum = MAX_INT if maximum is None else min(maximum, MAX_INT)
    digits = raw.lstrip("0") or "0"
    value = int(digits) if len(digits) <= _MAX_DIGITS else None  # never int() an unbounded string
    if value is None or value < minimum or value > maximum:
        shown = digits if len(digits) <= 40 else f"{digits[:20]}... ({len(digits)} digits)"
        raise InvalidParameter(f"{name} must be between {minimum} and {maximum}, got {shown}")
    return value


def _limit_param(query: Mapping[str, str]) -> int:
    limit = _int_param(query, "limit", minimum=1, maximum=MAX_PAGE)
    return DEFAULT_LIMIT if limit is None else limit


def _time_param(query: Mapping[str, str], name: str) -> float | None:
    """Seconds since the epoch, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    raw = _text_param(query, name)
    if raw is None:
        return None
    try:
        return float(raw) if raw.replace(".", "", 1).isdigit() else _parse_iso(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be epoch seconds or an ISO 8601 time, got {raw[:40]!r}") from None


def _parse_iso(raw: str) -> float:
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _flag(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidParameter(f"{name} must be 1 or 0, got {raw[:40]!r}")


# -- delete ------------------------------------------------------------------------------


async def delete_file(request: web.Request) -> web.Response:
    """Remove the catalog entry, then the bytes, then make both durable; uploads of it wait meanwhile.

    A crash between the two steps leaves at worst a blob without an entry (reconciliation reports
    it), never an entry without its blob.
    """
    digest = require_digest(request.match_info["hash"])
    pipeline = request.app[PIPELINE]
    store = request.app[STORE]
    async with pipeline.pins.exclusive(digest):
        if not await request.app[CATALOG].delete_blob(digest):
            raise BlobNotFound()
        await asyncio.get_running_loop().run_in_executor(None, store.delete, digest)
        await store.flush()
    return web.Response(status=204)
