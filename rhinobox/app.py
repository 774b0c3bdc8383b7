"""The application factory: builds the parts from settings, wires them, closes them in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from aiohttp import web

from rhinobox.backends import make_arbiter, make_blob_store, make_catalog, shares_data_dir
from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.datadir import DataDirLock
from rhinobox.group_state import MarkerClock, SharedReconcileReport, metrics_dir
from rhinobox.http.access_log import add_request_id_header, request_id_middleware
from rhinobox.http.auth import auth_middleware, setup_auth
from rhinobox.http.categories import rules_ctx
from rhinobox.http.errors import error_middleware
from rhinobox.http.jobs import end_job_streams, jobs_ctx
from rhinobox.http.keys import CATALOG, CATEGORIZER, PIPELINE, RECONCILE, SETTINGS, STORE
from rhinobox.http.metrics import metrics_middleware, setup_metrics
from rhinobox.http.routes import setup_routes
from rhinobox.http.uploads import uploads_ctx
from rhinobox.ingest.delete import retrying_removals
from rhinobox.ingest.hash_locks import FileHashLocks
from rhinobox.ingest.pipeline import IngestPipeline
from rhinobox.instances import ServerHome
from rhinobox.reconcile import ReconcileReport, check_after_unclean_stop, finish_pending_removals, reconcile
from rhinobox.settings import Settings

__all__ = ["GROUP_MEMBER", "HOME", "create_app"]

log = logging.getLogger(__name__)
# Socket read buffer per connection (aiohttp pauses reading at twice this): bigger reads, fewer wakeups.
READ_BUFSIZE: Final = 256 * 1024


# True in a serving process of a group (rhinobox.supervisor): the supervisor holds the data dir lock,
# ran the start-up cleanup and check, and reconciles; this process only opens the store and catalog.
GROUP_MEMBER = web.AppKey("group_member", bool)
# Where this server keeps its own files (spool, group state, run marker): the data directory, or the
# server's own directory in a data directory several servers share (rhinobox.instances).
HOME = web.AppKey("home", Path)


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if app[GROUP_MEMBER]:
        async with _open_member_storage(app):
            yield
        return
    shared = shares_data_dir(settings)
    lock = DataDirLock(settings.data_dir, shared=shared)
    lock.acquire()  # before anything touches the directory (start-up removes stale spool files)
    try:
        async with _open_storage(app, ServerHome(settings.data_dir, shared=shared)):
            yield
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def _open_storage(app: web.Application, home: ServerHome) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    async with (
        _homed(home),
        _opened_store(settings, home.instance_dir) as (store, stale),
        _opened_catalog(settings, store) as catalog,
    ):
        marker = home.marker
        stale += await loop.run_in_executor(None, home.remove_dead_spool)
        report = ReconcileReport(stale_spool_files=stale, unclean_stop=marker.check_since is not None)
        app[HOME] = home.path
        app[STORE] = store
        app[CATALOG] = catalog
        app[RECONCILE] = report
        await finish_pending_removals(store, catalog, make_arbiter(catalog), settings.data_dir)
        await check_after_unclean_stop(store, catalog, marker, report, settings.data_dir)
        await loop.run_in_executor(None, home.started)  # dead servers' windows checked: the next start's turn
        # Only now: the check's own syncs must not move the crashed run's window before it is done.
        store.on_durable(marker.advance)
        yield


@contextlib.asynccontextmanager
async def _open_member_storage(app: web.Application) -> AsyncIterator[None]:
    """The store and catalog of a serving process: no spool cleanup (other processes' uploads are live)."""
    settings = app[SETTINGS]
    home = app[HOME]
    clock = MarkerClock(home)
    try:
        async with (
            _opened_store(settings, None if home == settings.data_dir else home, remove_stale=False) as (store, _),
            _opened_catalog(settings, store) as catalog,
        ):
            app[STORE] = store
            app[CATALOG] = catalog
            app[RECONCILE] = SharedReconcileReport(home)
            store.on_durable(clock.advance)
            yield
    finally:
        clock.close()


@contextlib.asynccontextmanager
async def _homed(home: ServerHome) -> AsyncIterator[None]:
    """This server's home (its run marker; its own directory when shared) around everything else.

    `check_since` of its marker is set if the last run (or a dead server that shared the directory) did
    not stop cleanly. It ends cleanly (marker removed, own directory gone) only when everything inside
    ended without an error; otherwise the next start checks again.
    """
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, home.begin)
    try:
        yield
    except BaseException:
        await loop.run_in_executor(None, home.release)
        raise
    await loop.run_in_executor(None, home.end)


@contextlib.asynccontextmanager
async def _opened_store(
    settings: Settings, instance_dir: Path | None, *, remove_stale: bool = True
) -> AsyncIterator[tuple[BlobStore, int]]:
    """The blob store, open, with the count of spool files the last run left (removed now)."""
    store = make_blob_store(settings, instance_dir=instance_dir)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, store.open)
    try:
        stale = await loop.run_in_executor(None, store.remove_stale_spool) if remove_stale else 0
        if stale:
            log.warning("removed %d spool file(s) left by an earlier run", stale)
        yield store, stale
    finally:
        # Off the loop: a local store's close waits for a sync another thread may still be running.
        await loop.run_in_executor(None, store.close)
    if store.sync_failure is not None:
        raise store.sync_failure  # not a clean stop: the run marker stays, the next start checks the store


@contextlib.asynccontextmanager
async def _opened_catalog(settings: Settings, store: BlobStore) -> AsyncIterator[Catalog]:
    catalog = make_catalog(settings, store)
    await catalog.open()
    try:
        yield catalog
    finally:
        await catalog.close()


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    categorizer = app[CATEGORIZER]  # opened by rules_ctx (from the rules store)
    arbiter = make_arbiter(app[CATALOG], app[SETTINGS])
    if isinstance(arbiter, FileHashLocks):
        arbiter.open()
    try:
        pipeline = IngestPipeline(app[SETTINGS], app[STORE], app[CATALOG], categorizer, arbiter)
        app[PIPELINE] = pipeline
        await pipeline.warm_up()
        try:
            async with retrying_removals(pipeline.resources):
                yield
        finally:
            pipeline.close()
    finally:
        if isinstance(arbiter, FileHashLocks):
            await arbiter.close()


async def _reconcile_ctx(app: web.Application) -> AsyncIterator[None]:
    # Already done before serving (after an unclean stop), or the supervisor's to do.
    if app[GROUP_MEMBER] or app[RECONCILE].state != "pending":
        yield
        return
    task = asyncio.create_task(reconcile(app[STORE], app[CATALOG], app[RECONCILE]))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def create_app(settings: Settings, *, group_member: bool = False, instance_dir: Path | None = None) -> web.Application:
    """A ready-to-run aiohttp application for `settings` (`group_member`: see GROUP_MEMBER; `instance_dir`:
    a member's server directory where servers share the data directory, see HOME)."""
    if not group_member:
        # `processes` > 1 makes the backends share state with the other processes of a group (hash
        # locks, rules polling, job leases); an app outside a group has the data directory to itself.
        settings = dataclasses.replace(settings, processes=1)
    # Outermost first: the request id covers everything; metrics see the final status; auth runs inside
    # error_middleware so its refusals (and 404s behind it) get the JSON error shape. Bodies are never
    # decompressed by aiohttp: a compressed upload is refused whole (rhinobox.http.bodies), not unpacked.
    app = web.Application(
        handler_args={"read_bufsize": READ_BUFSIZE, "auto_decompress": False},
        middlewares=[request_id_middleware, metrics_middleware, error_middleware, auth_middleware],
    )
    app[SETTINGS] = settings
    app[GROUP_MEMBER] = group_member
    app[HOME] = instance_dir or settings.data_dir  # a server's own start may move it (_open_storage)
    setup_auth(app, settings)
    setup_metrics(app, metrics_dir(app[HOME]) if group_member else None)
    app.on_response_prepare.append(add_request_id_header)
    app.cleanup_ctx.extend([_storage_ctx, rules_ctx, _pipeline_ctx, _reconcile_ctx])
    app.cleanup_ctx.append(jobs_ctx)  # after the catalog opens, before it closes
    app.cleanup_ctx.append(uploads_ctx)  # after the pipeline opens, before it closes
    app.on_shutdown.append(end_job_streams)
    setup_routes(app)
    return app
