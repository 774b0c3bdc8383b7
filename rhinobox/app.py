"""The application factory: builds the parts from settings, wires them, closes them in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from rhinobox.backends import make_blob_store, make_catalog
from rhinobox.http.errors import error_middleware
from rhinobox.http.keys import CATALOG, CATEGORIZER, PIPELINE, RECONCILE, SETTINGS, STORE
from rhinobox.http.routes import setup_routes
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.pipeline import IngestPipeline
from rhinobox.reconcile import ReconcileReport, reconcile
from rhinobox.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = make_blob_store(settings)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, store.open)
    stale = await loop.run_in_executor(None, store.remove_stale_spool)
    if stale:
        log.warning("removed %d spool file(s) left by an earlier run", stale)
    catalog = make_catalog(settings)
    await catalog.open()
    app[STORE] = store
    app[CATALOG] = catalog
    app[RECONCILE] = ReconcileReport(stale_spool_files=stale)
    try:
        yield
    finally:
        await catalog.close()
        store.close()


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    categorizer = Categorizer.load(app[SETTINGS].data_dir)
    pipeline = IngestPipeline(app[SETTINGS], app[STORE], app[CATALOG], categorizer)
    app[CATEGORIZER] = categorizer
    app[PIPELINE] = pipeline
    try:
        yield
    finally:
        pipeline.close()


async def _reconcile_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(reconcile(app[STORE], app[CATALOG], app[RECONCILE]))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def create_app(settings: Settings) -> web.Application:
    """A ready-to-run aiohttp application for `settings`."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app.cleanup_ctx.extend([_storage_ctx, _pipeline_ctx, _reconcile_ctx])
    setup_routes(app)
    return app
