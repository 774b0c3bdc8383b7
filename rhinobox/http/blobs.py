"""Dedup-aware upload by hash: `POST /blobs/missing` says what to send, `PUT /blobs/{hash}` sends one.

A client hashes its files locally, asks which hashes the server lacks, and uploads only those,
each as a raw body that must hash to the name it is PUT under.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final

from aiohttp import hdrs, web

from rhinobox.blobs.digest import is_digest, require_digest
from rhinobox.errors import BadHash, FileTooLarge, InvalidBody, TooManyHashes
from rhinobox.http.bodies import body_chunks, read_json, refuse_encoded_body
from rhinobox.http.keys import PIPELINE
from rhinobox.ingest.entry import STORED, FileEntry
from rhinobox.ingest.known import missing_content
from rhinobox.ingest.names import clean_filename
from rhinobox.ingest.raw import ingest_raw, record_known_raw

__all__ = ["FILENAME_HEADER", "MAX_HASHES", "missing_blobs", "put_blob"]

MAX_HASHES: Final = 10_000
MAX_MISSING_BODY: Final = 2 * 1024 * 1024  # 10,000 quoted hashes with generous whitespace
FILENAME_HEADER: Final = "X-Filename"


async def missing_blobs(request: web.Request) -> web.Response:
    hashes = _hashes_from(await _read_json(request))
    return web.json_response({"missing": await missing_content(request.app[PIPELINE].resources, hashes)})


async def _read_json(request: web.Request) -> object:
    return await read_json(request, MAX_MISSING_BODY, too_large=TooManyHashes, invalid=InvalidBody)


def _hashes_from(document: object) -> list[str]:
    if not isinstance(document, dict) or not isinstance(document.get("hashes"), list):
        raise InvalidBody('expected {"hashes": [...]}')
    hashes: list[Any] = document["hashes"]
    if len(hashes) > MAX_HASHES:
        raise TooManyHashes(f"at most {MAX_HASHES} hashes per request, got {len(hashes)}")
    for index, value in enumerate(hashes):
        if not isinstance(value, str) or not is_digest(value):
            raise BadHash(f"hashes[{index}] is not 64 lowercase hex characters (BLAKE3-256)")
    return hashes


async def put_blob(request: web.Request) -> web.Response:
    digest = require_digest(request.match_info["hash"])
    refuse_encoded_body(request)  # also when the blob is known and the body is never read
    resources = request.app[PIPELINE].resources
    name = _upload_name(request.headers.get(FILENAME_HEADER))
    claimed = request.headers.get(hdrs.CONTENT_TYPE)
    claimed = claimed.strip().lower() if claimed else None
    entry = await record_known_raw(resources, digest, name, claimed)
    if entry is not None:
        return _result(entry, 200)  # the body is not needed: aiohttp discards whatever was sent
    limits = resources.limits
    if request.content_length is not None and request.content_length > limits.max_upload_bytes:
        raise FileTooLarge(f"files may be at most {limits.max_upload_mb} MiB")
    entry = await ingest_raw(resources, digest, name, claimed, body_chunks(request))
    return _result(entry, 201 if entry.status == STORED else 200)


def _upload_name(raw: str | None) -> str:
    """`X-Filename`, percent-decoded as UTF-8 (headers are ASCII: encode other characters)."""
    if raw is None:
        return clean_filename("")
    return clean_filename(urllib.parse.unquote(raw, errors="replace"))


def _result(entry: FileEntry, status: int) -> web.Response:
    body = {
        "name": entry.name,
        "status": entry.status,
        "hash": entry.digest,
        "size": entry.size,
        "mime": entry.mime,
        "category": entry.blob_category,
        "url": f"/files/{entry.digest}",
    }
    response = web.json_response(body, status=status)
    if status == 201:
        response.headers[hdrs.LOCATION] = f"/files/{entry.digest}"
    return response
