"""The route table: which handler answers which method and path."""

from __future__ import annotations

from aiohttp import web

from rhinobox.http.blobs import missing_blobs, put_blob
from rhinobox.http.categories import get_categories, put_categories
from rhinobox.http.files import delete_file, file_meta, get_file, list_files
from rhinobox.http.health import healthz
from rhinobox.http.ingest import ingest
from rhinobox.http.jobs import get_job, job_events
from rhinobox.http.metrics import metrics_handler
from rhinobox.http.stats import get_stats

__all__ = ["setup_routes"]


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/ingest", ingest)
    app.router.add_post("/ingest/media", ingest)
    app.router.add_get("/categories", get_categories)
    app.router.add_put("/categories", put_categories)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/files", list_files)
    app.router.add_get("/files/{hash}", get_file)
    app.router.add_delete("/files/{hash}", delete_file)
    app.router.add_get("/files/{hash}/meta", file_meta)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/blobs/missing", missing_blobs)
    app.router.add_put("/blobs/{hash}", put_blob)
    app.router.add_get("/jobs/{id}", get_job)
    app.router.add_get("/jobs/{id}/events", job_events)
    app.router.add_get("/metrics", metrics_handler)
