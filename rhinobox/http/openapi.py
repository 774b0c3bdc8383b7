"""The public API as an OpenAPI 3.1 document, served at `GET /openapi.json`.

Built as data here, next to the handlers it describes; tests keep it true (tests/test_openapi.py
checks it with openapi-spec-validator and validates real answers against it, and schemathesis runs
generated requests from it against a real server).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

from aiohttp import web

from rhinobox import __version__
from rhinobox.http.upload_headers import CHECKSUM_ALGORITHMS, DRAFT_INTEROP_VERSIONS

__all__ = ["OPENAPI_PATH", "build_openapi", "get_openapi"]

OPENAPI_PATH: Final = "/openapi.json"
JSON: Final = "application/json"
Schema = dict[str, Any]

# -- schemas -----------------------------------------------------------------------------------------

HASH: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "BLAKE3-256, 64 lowercase hex"}
UPLOAD_ID: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{32}$"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), extra: bool = False) -> Schema:
    """An object with exactly these properties, all required but `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": extra,
    }


INT: Final[Schema] = {"type": "integer", "minimum": 0}
# One Server-Sent Event of a job's stream (OpenAPI 3.1 reads a text/event-stream schema per event).
SSE_EVENT: Final[Schema] = {
    "type": "object",
    "properties": {
        "event": {"enum": ["state", "progress", "end"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json", "description": "the job as JSON"},
    },
    "required": ["event", "id", "data"],
}
STR: Final[Schema] = {"type": "string"}
TIME: Final[Schema] = {"type": "string", "description": "ISO 8601, UTC"}

ERROR_DETAIL: Final = _object({"code": {"type": "string", "description": "stable, machine-readable"}, "message": STR})

FILE_INFO: Final[dict[str, Schema]] = {
    "hash": HASH,
    "size": INT,
    "mime": STR,
    "category": STR,
    "first_upload_at": TIME,
    "last_upload_at": TIME,
    "upload_count": INT,
    "url": STR,
    "name": STR,
}

SCHEMAS: Final[dict[str, Schema]] = {
    "ErrorDetail": ERROR_DETAIL,
    "Error": _object({"error": _ref("ErrorDetail")}),
    "FileResult": _object(
        {
            "index": INT,
            "name": STR,
            "status": {"enum": ["stored", "duplicate", "error"]},
            "hash": _nullable(HASH),
            "size": _nullable(INT),
            "mime": _nullable(STR),
            "category": _nullable(STR),
            "url": _nullable(STR),
            "error": _nullable(_ref("ErrorDetail")),
        }
    ),
    "IngestAnswer": _object(
        {"results": {"type": "array", "items": _ref("FileResult")}, "stored": INT, "duplicates": INT, "failed": INT}
    ),
    "JobAccepted": _object({"job": STR, "status_url": STR, "events_url": STR}),
    "Job": _object(
        {
            "job": STR,
            "state": {"enum": ["queued", "running", "done", "failed", "interrupted"]},
            "counts": _object({"total": INT, "done": INT, "stored": INT, "duplicate": INT, "failed": INT}),
            "bytes": _object({"received": INT, "processed": INT}),
            "created_at": {"type": "number"},
            "updated_at": {"type": "number"},
            "finished_at": _nullable({"type": "number"}),
            "error": _nullable(_ref("ErrorDetail")),
            "results": _nullable({"type": "array", "items": _ref("FileResult")}),
        }
    ),
    "BlobResult": _object(
        {
            "name": STR,
            "status": {"enum": ["stored", "duplicate"]},
            "hash": HASH,
            "size": INT,
            "mime": STR,
            "category": STR,
            "url": STR,
        }
    ),
    "FileInfo": _object(FILE_INFO, optional=("name",)),
    "FileList": _object({"files": {"type": "array", "items": _ref("FileInfo")}, "next": _nullable(STR)}),
    "UploadRecord": _object(
        {
            "name": STR,
            "category": STR,
            "hint": _nullable(STR),
            "comment": _nullable(STR),
            "claimed_type": _nullable(STR),
            "uploaded_at": TIME,
        }
    ),
    "FileMeta": _object(
        {**FILE_INFO, "uploads": {"type": "array", "items": _ref("UploadRecord")}, "next": _nullable(STR)},
        optional=("name",),
    ),
    "Hashes": _object({"hashes": {"type": "array", "items": HASH, "maxItems": 10_000}}),
    "Missing": _object({"missing": {"type": "array", "items": HASH}}),
    "CategoryRules": _object(
        {
            "mime": {"type": "object", "additionalProperties": STR},
            "extension": {"type": "object", "additionalProperties": STR},
            "generic": {"type": "array", "items": STR},
            "default": STR,
        },
        optional=("mime", "extension", "generic", "default"),
    ),
    "Stats": _object(
        {
            "blobs": INT,
            "bytes_stored": INT,
            "uploads": INT,
            "bytes_uploaded": INT,
            "bytes_saved": {"type": "integer"},
            "categories": {"type": "object", "additionalProperties": _object({"blobs": INT, "bytes": INT})},
            "resumable": _object({"open": INT, "open_bytes": INT}),
        }
    ),
    "Health": _object(
        {
            "status": {"enum": ["ok", "unavailable"]},
            "version": STR,
            "problems": {"type": "array", "items": {"enum": ["catalog", "data_dir", "blob_sync"]}},
            "reconcile": {
                "type": "object",
                "properties": {"state": {"enum": ["pending", "running", "done", "failed"]}},
                "required": ["state"],
                "description": "start-up reconciliation; its *_sample hash lists need a token when auth is on",
            },
        }
    ),
    # tus metadata is open-ended: these keys mean something to RhinoBox, others are kept and shown as sent.
    "UploadMetadata": {
        **_object(
            {"filename": STR, "filetype": STR, "category": STR, "comment": STR, "blake3": STR},
            optional=("filename", "filetype", "category", "comment", "blake3"),
        ),
        "additionalProperties": STR,
    },
    "UploadState": _object(
        {
            "id": UPLOAD_ID,
            "offset": INT,
            "length": _nullable(INT),
            "complete": {"type": "boolean"},
            "expires": TIME,
            "metadata": _ref("UploadMetadata"),
            "result": _nullable(_ref("FileResult")),
            "error": _nullable(_ref("ErrorDetail")),
        }
    ),
}

# -- responses ---------------------------------------------------------------------------------------

_ERROR_WHEN: Final[dict[int, str]] = {
    400: "malformed request (`bad_hash`, `invalid_parameter`, `invalid_body`, `malformed_multipart`, ...)",
    401: "API tokens are configured and none (or a wrong one) was sent (`unauthorized`)",
    403: "a read-only token on a write (`forbidden`)",
    404: "no such blob, job or upload",
    408: "the client stalled or sent its body below `RHINOBOX_BODY_MIN_RATE` (`upload_timeout`)",
    409: "the upload is not where the request says, or it failed",
    412: "a precondition or protocol version does not hold",
    413: "over a size or count limit",
    415: "wrong body type, or a compressed body (`unsupported_encoding`)",
    416: "the range starts at or past the end (`range_not_satisfiable`)",
    417: "an `Expect` other than `100-continue` (`expectation_failed`)",
    422: "the content does not match its declared digest, or is empty",
    423: "another request is appending to this upload (`upload_locked`)",
    460: "the chunk does not match its `Upload-Checksum` (`checksum_mismatch`)",
    503: "the server is full (`overloaded`, with `Retry-After`) or unhealthy",
    507: "not enough free disk (`insufficient_storage`)",
}


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(status: int) -> dict[str, Any]:
    return _json(_ref("Error"), _ERROR_WHEN[status])


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _error(status) for status in statuses}


def _header(description: str, schema: Schema | None = None, *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "schema": schema or STR, "required": required}


# Every operation behind auth may answer these; writes also 403; every body-taking one 408, 415, 417.
READ: Final = (401,)
WRITE: Final = (401, 403, 417)
BODY: Final = (401, 403, 408, 415, 417)
NO_BODY: Final[dict[str, Any]] = {"description": "no body"}


# Links: where an answer's id or hash leads (clients, and schemathesis' stateful runs, follow them).
UPLOAD_OPERATIONS: Final = ("uploadOffset", "getUpload", "appendUpload", "overrideUpload", "terminateUpload")
FILE_OPERATIONS: Final = ("getFile", "headFile", "fileMeta", "deleteFile", "putBlob")


def _links(operations: tuple[str, ...], parameter: str, expression: str) -> dict[str, Any]:
    return {op: {"operationId": op, "parameters": {parameter: expression}} for op in operations}


def _path_param(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _header_param(name: str, schema: Schema, description: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": schema, "description": description}


def _op(op_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "summary": summary, "responses": responses, **extra}


# -- operations --------------------------------------------------------------------------------------

MULTIPART_BODY: Final[dict[str, Any]] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "category": {"type": "string", "description": "hint: a sub-folder of each file's category"},
                    "comment": {"type": "string", "maxLength": 65536},
                },
                "required": ["files"],
            }
        }
    },
}
INGEST_ANSWER: Final = _ref("IngestAnswer")
FLAG_VALUES: Final = ("true", "false", "1", "0", "yes", "no", "on", "off")


def _ingest(op_id: str) -> dict[str, Any]:
    responses = {
        "200": {
            **_json(INGEST_ANSWER, "every file stored or found a duplicate"),
            "links": _links(FILE_OPERATIONS, "hash", "$response.body#/results/0/hash"),
        },
        "202": {
            **_json(_ref("JobAccepted"), "`?async=true`: every file received; the job stores them (docs/jobs.md)"),
            "links": _links(("getJob", "jobEvents"), "id", "$response.body#/job"),
        },
        "207": _json(INGEST_ANSWER, "some files failed: each has its own `error`"),
        "400": _error(400),
        "413": _json(
            {"anyOf": [_ref("Error"), INGEST_ANSWER]},
            "a text field or the part count over its limit; or the one file of the request over the size limit",
        ),
        "422": _json(INGEST_ANSWER, "the one file of the request was empty or did not match its declared digest"),
        "500": _json(INGEST_ANSWER, "the one file of the request could not be stored (`storage_error`)"),
        "503": _error(503),
        "507": _json({"anyOf": [_ref("Error"), INGEST_ANSWER]}, _ERROR_WHEN[507]),
        **_errors(*BODY),
    }
    return _op(
        op_id,
        "Upload files (multipart/form-data); one result per file part, in order",
        responses,
        parameters=[_query("async", {"enum": list(FLAG_VALUES)}, "true: answer 202 with a job once received")],
        requestBody=MULTIPART_BODY,
        tags=["ingest"],
    )


HASH_PARAM: Final = _path_param("hash", HASH)
DOWNLOAD_HEADERS: Final[dict[str, Any]] = {
    "ETag": _header('`"<hash>"`'),
    "Accept-Ranges": _header("`bytes`"),
    "Cache-Control": _header("`public, max-age=31536000, immutable`"),
}
BYTES: Final[dict[str, Any]] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}


def _download(op_id: str, summary: str) -> dict[str, Any]:
    return _op(
        op_id,
        summary,
        {
            "200": {"description": "the bytes", "headers": DOWNLOAD_HEADERS, "content": BYTES},
            "206": {"description": "one range of the bytes", "content": BYTES},
            "304": NO_BODY,
            "412": _error(412),
            "416": _error(416),
            **_errors(400, 404, *READ),
        },
        parameters=[
            HASH_PARAM,
            _query("download", {"type": "string"}, "true: `Content-Disposition: attachment` with the first name"),
            _query("name", {"type": "string"}, "`Content-Disposition: attachment` with this name"),
        ],
        tags=["files"],
    )


LISTING_PARAMS: Final = [
    _query("category", STR, "whole-segment prefix of a category"),
    _query("mime", STR, "exact detected MIME type"),
    _query("name", STR, "substring of an upload's name"),
    _query("min_size", {"type": "integer", "minimum": 0}, "bytes, inclusive"),
    _query("max_size", {"type": "integer", "minimum": 0}, "bytes, inclusive"),
    _query("since", STR, "first upload at or after (epoch seconds or ISO 8601)"),
    _query("until", STR, "first upload before (epoch seconds or ISO 8601)"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)"),
    _query("cursor", {"type": "integer", "minimum": 1}, "`next` of the previous page"),
]

# -- resumable uploads (tus 1.0.0 and the IETF draft) -------------------------------------------------

TUS_RESUMABLE: Final = _header_param(
    "Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}, "tus version (or send Upload-Draft-Interop-Version)"
)
DRAFT_PARAMS: Final = [
    _header_param(
        "Upload-Draft-Interop-Version", {"enum": list(DRAFT_INTEROP_VERSIONS)}, "the IETF draft instead of tus"
    ),
    _header_param("Upload-Complete", {"enum": ["?0", "?1"]}, "draft: whether this request ends the upload"),
]
UPLOAD_ID_PARAM: Final = _path_param("id", UPLOAD_ID)
TUS_HEADERS: Final[dict[str, Any]] = {
    "Upload-Offset": _header("bytes stored so far", {"type": "string", "pattern": "^[0-9]+$"}, required=True),
    "Upload-Expires": _header("when an idle upload expires (HTTP date)", required=True),
}
OCTETS: Final[dict[str, Any]] = {
    "content": {
        "application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "application/partial-upload": {"schema": {"type": "string", "format": "binary"}},
    }
}
UPLOAD_ERRORS: Final = (400, 401, 403, 412, 413, 415, 417, 507)
PATCH_RESPONSES: Final[dict[str, Any]] = {
    "204": {
        "description": "stored; the answer completing the upload also has `Content-Location` and `RhinoBox-Result`",
        "headers": {
            **TUS_HEADERS,
            "Content-Location": _header("`/files/<hash>`, once complete"),
            "RhinoBox-Result": _header("the file's result (a `FileResult`), compact ASCII JSON, once complete"),
        },
    },
    **_errors(400, 404, 408, 409, 412, 413, 415, 417, 422, 423, 460, 507, *BODY),
}


def _uploads_paths() -> dict[str, Any]:
    options = _op(
        "discoverUploads",
        "tus discovery: version, extensions, largest upload, checksum algorithms",
        {"204": {"description": "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm headers"}},
        security=[{}],
        tags=["uploads"],
    )
    create = _op(
        "createUpload",
        "Create a resumable upload (tus creation, creation-with-upload, creation-defer-length)",
        {
            "201": {
                "description": "created; `Location: /uploads/<id>`",
                "headers": {"Location": _header("`/uploads/<32 hex>`", required=True), **TUS_HEADERS},
                "links": _links(UPLOAD_OPERATIONS, "id", "$response.header.Location#regex:/uploads/([0-9a-f]+)"),
            },
            **_errors(*UPLOAD_ERRORS, 408, 409, 422, 460, 503),
        },
        parameters=[
            TUS_RESUMABLE,
            _header_param("Upload-Length", {"type": "integer", "minimum": 0}, "the whole upload's length"),
            _header_param("Upload-Defer-Length", {"type": "string", "enum": ["1"]}, "the length comes later"),
            _header_param("Upload-Metadata", STR, "comma-separated `key base64value` pairs"),
            *DRAFT_PARAMS,
        ],
        requestBody={"required": False, **OCTETS},
        tags=["uploads"],
    )
    return {
        "/uploads": {"options": options, "post": create},
        "/uploads/{id}": {
            "parameters": [UPLOAD_ID_PARAM],
            "options": {**options, "operationId": "discoverUpload"},
            "head": _op(
                "uploadOffset",
                "How far the upload is (tus HEAD)",
                {
                    "200": {"description": "Upload-Offset, Upload-Length, Upload-Metadata", "headers": TUS_HEADERS},
                    "400": {"description": "a malformed header (no body: HEAD)"},
                    "401": {"description": "no valid token (no body: HEAD)"},
                    "403": {"description": "a read-only token (no body: HEAD)"},
                    "404": {"description": "unknown or expired (no body: HEAD)"},
                    "409": {"description": "the upload failed (no body: HEAD)"},
                    "412": {"description": "unsupported protocol version (no body: HEAD)"},
                },
                parameters=[TUS_RESUMABLE],
                tags=["uploads"],
            ),
            "get": _op(
                "getUpload",
                "The upload's state, and its result once complete",
                {"200": _json(_ref("UploadState"), "the upload"), **_errors(404, 401, 403)},
                tags=["uploads"],
            ),
            "patch": _op(
                "appendUpload",
                "Append bytes at `Upload-Offset`",
                PATCH_RESPONSES,
                parameters=[
                    TUS_RESUMABLE,
                    _header_param(
                        "Upload-Offset", {"type": "integer", "minimum": 0}, "where these bytes go", required=True
                    ),
                    _header_param("Upload-Checksum", STR, f"`<{'|'.join(CHECKSUM_ALGORITHMS)}> <base64>` of the bytes"),
                    _header_param("Upload-Length", {"type": "integer", "minimum": 0}, "a deferred length"),
                    *DRAFT_PARAMS,
                ],
                requestBody={"required": True, **OCTETS},
                tags=["uploads"],
            ),
            "post": _op(
                "overrideUpload",
                "PATCH or DELETE sent as POST with `X-HTTP-Method-Override` (clients behind proxies that drop PATCH)",
                {**PATCH_RESPONSES, "405": _json(_ref("Error"), "no usable `X-HTTP-Method-Override`")},
                parameters=[
                    _header_param("X-HTTP-Method-Override", {"enum": ["PATCH", "DELETE"]}, "the real method"),
                    TUS_RESUMABLE,
                    _header_param("Upload-Offset", {"type": "integer", "minimum": 0}, "where these bytes go"),
                ],
                requestBody={"required": False, **OCTETS},
                tags=["uploads"],
            ),
            "delete": _op(
                "terminateUpload",
                "Terminate the upload; its bytes go at once",
                {"204": NO_BODY, **_errors(400, 404, 412, *WRITE)},
                parameters=[TUS_RESUMABLE],
                tags=["uploads"],
            ),
        },
    }


# -- the document ------------------------------------------------------------------------------------


def _paths() -> dict[str, Any]:
    return {
        "/ingest": {"post": _ingest("ingest")},
        "/ingest/media": {"post": _ingest("ingestMedia")},
        **_uploads_paths(),
        "/files": {
            "get": _op(
                "listFiles",
                "Blobs newest first, filtered, keyset-paginated",
                {"200": _json(_ref("FileList"), "one page"), **_errors(400, *READ)},
                parameters=LISTING_PARAMS,
                tags=["files"],
            )
        },
        "/files/{hash}": {
            "get": _download("getFile", "Download the bytes (ranges, conditions, attachment names)"),
            "head": {**_download("headFile", "The download's headers without its body")},
            "delete": _op(
                "deleteFile",
                "Delete the blob and every record of it",
                {"204": NO_BODY, **_errors(400, 404, *WRITE)},
                parameters=[HASH_PARAM],
                tags=["files"],
            ),
        },
        "/files/{hash}/meta": {
            "get": _op(
                "fileMeta",
                "The blob and its uploads, oldest first, paginated",
                {"200": _json(_ref("FileMeta"), "the blob"), **_errors(400, 404, *READ)},
                parameters=[
                    HASH_PARAM,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "uploads per page"),
                    _query("cursor", {"type": "integer", "minimum": 0}, "`next` of the previous page"),
                ],
                tags=["files"],
            )
        },
        "/blobs/missing": {
            "post": _op(
                "missingBlobs",
                "Which of these hashes the server does not hold",
                {"200": _json(_ref("Missing"), "the missing hashes, in the order given"), **_errors(400, 413, *BODY)},
                requestBody={"required": True, "content": {JSON: {"schema": _ref("Hashes")}}},
                tags=["blobs"],
            )
        },
        "/blobs/{hash}": {
            "put": _op(
                "putBlob",
                "Upload one file by its hash (the body is not read when the hash is known)",
                {
                    "200": {
                        **_json(_ref("BlobResult"), "a duplicate: recorded"),
                        "links": _links(FILE_OPERATIONS, "hash", "$response.body#/hash"),
                    },
                    "201": {
                        **_json(_ref("BlobResult"), "stored", {"Location": _header("`/files/<hash>`", required=True)}),
                        "links": _links(FILE_OPERATIONS, "hash", "$response.body#/hash"),
                    },
                    **_errors(400, 413, 422, 503, 507, *BODY),
                },
                parameters=[HASH_PARAM, _header_param("X-Filename", STR, "the name, percent-encoded UTF-8")],
                requestBody={"required": False, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                tags=["blobs"],
            )
        },
        "/categories": {
            "get": _op(
                "getCategories",
                "The category rules in force",
                {"200": _json(_ref("CategoryRules"), "the rules"), **_errors(*READ)},
                tags=["categories"],
            ),
            "put": _op(
                "putCategories",
                "Replace the category rules whole",
                {"200": _json(_ref("CategoryRules"), "the rules now in force"), **_errors(400, *BODY)},
                requestBody={"required": True, "content": {JSON: {"schema": _ref("CategoryRules")}}},
                tags=["categories"],
            ),
        },
        "/jobs/{id}": {
            "get": _op(
                "getJob",
                "An async ingest job: state, counts, and its results once ended",
                {"200": _json(_ref("Job"), "the job"), **_errors(404, *READ)},
                parameters=[_path_param("id", STR)],
                tags=["jobs"],
            )
        },
        "/jobs/{id}/events": {
            "get": _op(
                "jobEvents",
                "Server-Sent Events: `state` first, a `progress` per file, `end` last",
                {
                    "200": {
                        "description": "each event's data is one line of JSON (docs/jobs.md)",
                        "content": {"text/event-stream": {"schema": SSE_EVENT}},
                    },
                    **_errors(404, 503, *READ),
                },
                parameters=[_path_param("id", STR)],
                tags=["jobs"],
            )
        },
        "/stats": {
            "get": _op(
                "getStats",
                "Totals and deduplication savings",
                {"200": _json(_ref("Stats"), "the figures"), **_errors(*READ)},
                tags=["stats"],
            )
        },
        "/healthz": {
            "get": _op(
                "health",
                "Health for load balancers (no token needed)",
                {
                    "200": _json(_ref("Health"), "healthy"),
                    "503": _json(_ref("Health"), "unhealthy: `problems` says why"),
                },
                security=[{}],
                tags=["health"],
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics",
                {
                    "200": {"description": "text exposition format", "content": {"text/plain": {"schema": STR}}},
                    **_errors(*READ),
                },
                tags=["metrics"],
            )
        },
        OPENAPI_PATH: {
            "get": _op(
                "openapi",
                "This document",
                {
                    "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}},
                    **_errors(*READ),
                },
                tags=["meta"],
            )
        },
    }


def build_openapi() -> dict[str, Any]:
    """The whole document, as a fresh dict (deep-copied: callers such as test tools may change it)."""
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "RhinoBox",
            "version": __version__,
            "description": "Content-addressed media ingest. Every error answers "
            '`{"error": {"code", "message"}}`; see docs/api.md, docs/ingest.md, docs/jobs.md.',
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "RHINOBOX_API_TOKENS"}},
        },
        # Tokens are optional: a server without RHINOBOX_API_TOKENS serves everyone.
        "security": [{}, {"bearer": []}],
    }
    return copy.deepcopy(document)


async def get_openapi(request: web.Request) -> web.Response:
    """`GET /openapi.json`: the document (built per request: about a millisecond, asked for rarely)."""
    return web.Response(body=json.dumps(build_openapi(), separators=(",", ":")).encode(), content_type=JSON)
