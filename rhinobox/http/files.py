"""The catalog over HTTP: `GET /files` (filtered, paginated), `GET /files/{hash}/meta`, `DELETE /files/{hash}`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from rhinobox.blobs.digest import require_digest
from rhinobox.catalog.base import MAX_PAGE, BlobInfo, BlobQuery, StoredUpload
from rhinobox.errors import BlobNotFound, InvalidParameter
from rhinobox.http.keys import CATALOG, PIPELINE
from rhinobox.http.params import int_param, lower, text_param, time_param
from rhinobox.ingest.delete import delete_content

__all__ = ["delete_file", "file_meta", "list_files"]

DEFAULT_LIMIT: Final = 100
_LISTING_PARAMS: Final = frozenset(
    {"category", "mime", "name", "min_size", "max_size", "since", "until", "limit", "cursor"}
)


async def file_meta(request: web.Request) -> web.Response:
    digest = require_digest(request.match_info["hash"])
    catalog = request.app[CATALOG]
    blob = await catalog.get_blob(digest)
    if blob is None:
        raise BlobNotFound()
    limit = _limit_param(request.query)
    after = int_param(request.query, "cursor", minimum=0)
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
        category=lower(text_param(query, "category")),
        mime=lower(text_param(query, "mime")),
        name=text_param(query, "name"),
        min_size=int_param(query, "min_size", minimum=0),
        max_size=int_param(query, "max_size", minimum=0),
        since=time_param(query, "since"),
        until=time_param(query, "until"),
    )
    limit = _limit_param(query)
    before = int_param(query, "cursor", minimum=1)
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


def _limit_param(query: Mapping[str, str]) -> int:
    limit = int_param(query, "limit", minimum=1, maximum=MAX_PAGE)
    return DEFAULT_LIMIT if limit is None else limit


async def delete_file(request: web.Request) -> web.Response:
    """Remove the blob and its records (`rhinobox.ingest.delete`); 204, or 404 if it is not known."""
    digest = require_digest(request.match_info["hash"])
    if not await delete_content(request.app[PIPELINE].resources, digest):
        raise BlobNotFound()
    return web.Response(status=204)
