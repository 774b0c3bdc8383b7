"""The route table: which handler answers which method and path."""

from __future__ import annotations

from aiohttp import web

from rhinobox.http.categories import get_categories, put_categories
from rhinobox.http.health import healthz
from rhinobox.http.ingest import ingest

__all__ = ["setup_routes"]


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/ingest", ingest)
    app.router.add_post("/ingest/media", ingest)
    app.router.add_get("/categories", get_categories)
    app.router.add_put("/categories", put_categories)
    app.router.add_get("/healthz", healthz)
