"""The route table: which handler answers which method and path."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from rhinobox.http.blobs import missing_blobs, put_blob
from rhinobox.http.bodies import expect_continue
from rhinobox.http.categories import get_categories, put_categories
from rhinobox.http.download import get_file
from rhinobox.http.errors import Handler
from rhinobox.http.files import delete_file, file_meta, list_files
from rhinobox.http.health import healthz
from rhinobox.http.ingest import ingest
from rhinobox.http.jobs import get_job, job_events
from rhinobox.http.metrics import metrics_handler
from rhinobox.http.openapi import OPENAPI_PATH, get_openapi
from rhinobox.http.stats import get_stats
from rhinobox.http.uploads import (
    create_upload,
    delete_upload,
    get_upload,
    head_upload,
    options_uploads,
    patch_upload,
    post_to_upload,
)
from rhinobox.http.web_page import get_asset, get_index

__all__ = ["setup_routes"]

# Paths whose HEAD has its own handler (declared before their GET), not GET's answer without a body.
_OWN_HEAD: Final = frozenset({"/uploads/{id}"})


def setup_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        if method == "GET":  # and HEAD
            app.router.add_get(path, handler, expect_handler=expect_continue, allow_head=path not in _OWN_HEAD)
        else:
            app.router.add_route(method, path, handler, expect_handler=expect_continue)


ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("POST", "/ingest", ingest),
    ("POST", "/ingest/media", ingest),
    ("GET", "/categories", get_categories),
    ("PUT", "/categories", put_categories),
    ("GET", "/healthz", healthz),
    ("GET", "/files", list_files),
    ("GET", "/files/{hash}", get_file),
    ("DELETE", "/files/{hash}", delete_file),
    ("GET", "/files/{hash}/meta", file_meta),
    ("GET", "/stats", get_stats),
    ("POST", "/blobs/missing", missing_blobs),
    ("PUT", "/blobs/{hash}", put_blob),
    ("GET", "/jobs/{id}", get_job),
    ("GET", "/jobs/{id}/events", job_events),
    ("GET", "/metrics", metrics_handler),
    ("GET", OPENAPI_PATH, get_openapi),
    ("OPTIONS", "/uploads", options_uploads),
    ("OPTIONS", "/uploads/", options_uploads),
    ("OPTIONS", "/uploads/{id}", options_uploads),
    ("POST", "/uploads", create_upload),
    ("POST", "/uploads/", create_upload),
    ("HEAD", "/uploads/{id}", head_upload),
    ("GET", "/uploads/{id}", get_upload),
    ("PATCH", "/uploads/{id}", patch_upload),
    ("DELETE", "/uploads/{id}", delete_upload),
    ("POST", "/uploads/{id}", post_to_upload),
    ("GET", "/", get_index),
    ("GET", "/assets/{name}", get_asset),
)
