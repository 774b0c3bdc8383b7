"""`GET /metrics` in Prometheus text format, and the counters behind it (one registry per app).

Costs on the hot path are one histogram observation per request and one aggregated update per
ingest request (not per file). Queue depth and worker use are read from the pool at scrape time.

In a serving process of a group (several processes on one data directory, rhinobox.supervisor) the
values live in prometheus-client's multiprocess files (`PROMETHEUS_MULTIPROC_DIR`, set by the
supervisor), so any process answers `/metrics` for the whole server: counters summed over every
process that ever ran (a restarted one's counts stay), pool gauges summed over the live ones
(each process refreshes its own every POOL_GAUGE_SECONDS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from rhinobox.http.access_log import route_of
from rhinobox.http.errors import Handler
from rhinobox.http.keys import CATALOG, METRICS, PIPELINE, UPLOADS
from rhinobox.ingest.entry import DUPLICATE, STORED
from rhinobox.ingest.report import IngestReport

__all__ = ["CategoryLabels", "Metrics", "metrics_handler", "metrics_middleware", "setup_metrics"]

log = logging.getLogger(__name__)

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
CLIENT_CLOSED: Final = 499  # nginx's status for a request the client (or shutdown) abandoned
NO_CATEGORY: Final = "none"
OTHER_CATEGORY: Final = "other"
ERROR_STATUS: Final = "error"
# The `category` label's values: the default rules' top levels, plus the first few other top levels
# seen (a client may rewrite the rules at will, and label children are never removed), then `other`.
KNOWN_CATEGORIES: Final = frozenset({"images", "videos", "audio", "documents", "archives", "code", OTHER_CATEGORY})
EXTRA_CATEGORY_LABELS: Final = 8
CATEGORY_LABEL_MAX_CHARS: Final = 40
POOL_GAUGE_SECONDS: Final = 1.0  # how often a process of a group publishes its pool's gauges
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client when it is imported
LOCK_WAIT_NAME: Final = "rhinobox_catalog_lock_wait_seconds"
LOCK_WAIT_HELP: Final = "Seconds catalog writes waited for the database's write lock (another process held it)."


class CategoryLabels:
    """Maps a blob category to a bounded set of label values: `images` for `images/png`, else `other`."""

    def __init__(self, extra: int = EXTRA_CATEGORY_LABELS) -> None:
        self._extra_max = extra
        self._extra: set[str] = set()

    def __call__(self, blob_category: str | None) -> str:
        if not blob_category:
            return NO_CATEGORY
        top = blob_category.partition("/")[0]
        if top in KNOWN_CATEGORIES or top in self._extra:
            return top
        if len(self._extra) < self._extra_max and 0 < len(top) <= CATEGORY_LABEL_MAX_CHARS and top != NO_CATEGORY:
            self._extra.add(top)
            return top
        return OTHER_CATEGORY


class Metrics:
    """Every metric of one app, in its own `CollectorRegistry` (no global state between apps)."""

    def __init__(self, app: web.Application, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir
        r = self.registry
        self.requests = Counter(
            "rhinobox_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "rhinobox_http_request_duration_seconds",
            "Time from request to the handler's answer, per route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.files = Counter(
            "rhinobox_ingest_files",
            "Files received by ingest, by result and category.",
            ["status", "category"],
            registry=r,
        )
        self.bytes = Counter(
            "rhinobox_ingest_bytes",
            "Bytes received by ingest, by result and category.",
            ["status", "category"],
            registry=r,
        )
        self.duplicates = Counter("rhinobox_ingest_duplicates", "Files whose content was already stored.", registry=r)
        self.bytes_saved = Counter(
            "rhinobox_ingest_dedup_saved_bytes", "Bytes not stored again thanks to deduplication.", registry=r
        )
        self.errors = Counter("rhinobox_errors", "Errors answered, by stable error code.", ["code"], registry=r)
        self.live = _LiveCollector(app, pool=multiprocess_dir is None)
        r.register(self.live)
        self.pool_gauges: _PoolGauges | None = None
        if multiprocess_dir is not None:
            if os.environ.get(MULTIPROC_ENV) != os.fspath(multiprocess_dir):
                log.warning("%s is not %s: /metrics shows this process only", MULTIPROC_ENV, multiprocess_dir)
            self.pool_gauges = _PoolGauges(r)
        # labels() takes a lock and builds a key per call: the hot paths keep the children they use.
        self._request_children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}
        self._ingest_children: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        self.category_label = CategoryLabels()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in KNOWN_METHODS else "OTHER", route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.latency.labels(key[0], route),
                self.requests.labels(key[0], route, str(status)),
            )
        children[0].observe(seconds)
        children[1].inc()

    def observe_ingest(self, report: IngestReport) -> None:
        """Count one ingest request's files: aggregated first, so a 10 000-file batch is a few updates."""
        files: dict[tuple[str, str], list[int]] = {}  # (status, category) -> [files, bytes]
        errors: dict[str, int] = {}
        duplicates = saved = 0
        for entry in report.entries:
            if entry.error is not None:
                key = (ERROR_STATUS, NO_CATEGORY)
                errors[entry.error.code] = errors.get(entry.error.code, 0) + 1
            else:
                key = (entry.status or STORED, self.category_label(entry.blob_category))
                if entry.status == DUPLICATE:
                    duplicates += 1
                    saved += entry.size
            tally = files.get(key)
            if tally is None:
                files[key] = [1, entry.size]
            else:
                tally[0] += 1
                tally[1] += entry.size
        for key, (count, size) in files.items():
            children = self._ingest_children.get(key)
            if children is None:
                children = self._ingest_children[key] = (self.files.labels(*key), self.bytes.labels(*key))
            children[0].inc(count)
            children[1].inc(size)
        for code, count in errors.items():
            self.errors.labels(code).inc(count)
        if duplicates:
            self.duplicates.inc(duplicates)
            self.bytes_saved.inc(saved)

    def observe_error_response(self, response: web.StreamResponse) -> None:
        """Count the code of a request-level JSON error answer (bodies are tiny, and this is the error path)."""
        if not isinstance(response, web.Response) or response.content_type != "application/json":
            return
        body = response.body
        if not isinstance(body, bytes):
            return
        try:
            error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            return
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            self.errors.labels(error["code"]).inc()


class _PoolGauges:
    """The pool's gauges as multiprocess gauges (summed over the live processes of a group)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=registry, multiprocess_mode="livesum")

        self.queued = gauge("rhinobox_ingest_queue_depth", "Files waiting for or on a worker.")
        self.capacity = gauge("rhinobox_ingest_queue_capacity", "Queue size before 503.")
        self.workers = gauge("rhinobox_ingest_workers", "Ingest worker threads.")
        self.busy = gauge("rhinobox_ingest_workers_busy", "Worker threads running a task now.")
        self.lock_wait = Counter(LOCK_WAIT_NAME, LOCK_WAIT_HELP, registry=registry)
        self._lock_wait_published = 0.0

    def publish(self, app: web.Application) -> None:
        waited = _lock_wait_seconds(app)
        if waited > self._lock_wait_published:
            self.lock_wait.inc(waited - self._lock_wait_published)
            self._lock_wait_published = waited
        pipeline = app.get(PIPELINE)
        if pipeline is None:
            return
        pool = pipeline.resources.pool
        self.queued.set(pool.queued)
        self.capacity.set(pool.capacity)
        self.workers.set(pool.workers)
        self.busy.set(pool.busy)


class _GroupCollector(Collector):
    """A group's metrics: every process's files, then the utilization and catalog gauges derived here."""

    def __init__(self, path: Path, live: _LiveCollector) -> None:
        self._files = MultiProcessCollector(None, path=os.fspath(path))  # type: ignore[no-untyped-call]
        self._live = live

    def collect(self) -> Iterator[Metric]:
        sums: dict[str, float] = {}
        for metric in self._files.collect():  # type: ignore[no-untyped-call]
            if metric.name in ("rhinobox_ingest_workers", "rhinobox_ingest_workers_busy"):
                sums[metric.name] = sum(sample.value for sample in metric.samples)
            yield metric
        workers = sums.get("rhinobox_ingest_workers", 0.0)
        if workers:
            yield GaugeMetricFamily(
                "rhinobox_ingest_worker_utilization",
                "Busy workers / workers (0..1).",
                sums.get("rhinobox_ingest_workers_busy", 0.0) / workers,
            )
        yield from self._live.collect()


class _LiveCollector(Collector):
    """Gauges read at scrape time from the running parts: the worker pool (`pool`) and the catalog size."""

    def __init__(self, app: web.Application, *, pool: bool = True) -> None:
        self._app = app
        self._pool = pool
        self.catalog: tuple[int, int, int] | None = None  # blobs, bytes stored, uploads

    def collect(self) -> Iterator[Metric]:
        pipeline = self._app.get(PIPELINE) if self._pool else None
        if pipeline is not None:
            pool = pipeline.resources.pool
            yield GaugeMetricFamily("rhinobox_ingest_queue_depth", "Files waiting for or on a worker.", pool.queued)
            yield GaugeMetricFamily("rhinobox_ingest_queue_capacity", "Queue size before 503.", pool.capacity)
            yield GaugeMetricFamily("rhinobox_ingest_workers", "Ingest worker threads.", pool.workers)
            yield GaugeMetricFamily("rhinobox_ingest_workers_busy", "Worker threads running a task now.", pool.busy)
            yield GaugeMetricFamily(
                "rhinobox_ingest_worker_utilization", "Busy workers / workers (0..1).", pool.busy / pool.workers
            )
        if self._pool and CATALOG in self._app:
            yield CounterMetricFamily(LOCK_WAIT_NAME, LOCK_WAIT_HELP, _lock_wait_seconds(self._app))
        if self.catalog is not None:
            blobs, stored, uploads = self.catalog
            yield GaugeMetricFamily("rhinobox_catalog_blobs", "Distinct blobs in the catalog.", blobs)
            yield GaugeMetricFamily("rhinobox_catalog_bytes", "Bytes of all distinct blobs.", stored)
            yield GaugeMetricFamily("rhinobox_catalog_uploads", "Uploads recorded (duplicates included).", uploads)
        resumable = self._app.get(UPLOADS)
        if resumable is not None:  # the shared uploads directory: the whole server's, whichever process answers
            usage = resumable.usage()
            yield GaugeMetricFamily(
                "rhinobox_resumable_open", "Resumable uploads open (not complete).", usage.open_uploads
            )
            yield GaugeMetricFamily(
                "rhinobox_resumable_open_bytes", "Bytes held by open resumable uploads.", usage.open_bytes
            )


def _lock_wait_seconds(app: web.Application) -> float:
    """The catalog writer's waits for the database's write lock (SQLite; 0 for other catalogs)."""
    catalog = app.get(CATALOG)
    waited = getattr(catalog, "lock_wait_seconds", 0.0)
    return float(waited) if isinstance(waited, int | float) else 0.0


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency and count per canonical route; sits outside `error_middleware` to see the final status."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = CLIENT_CLOSED
    try:
        response = await handler(request)
        status = response.status
        if status >= 400:
            metrics.observe_error_response(response)
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.observe_request(request.method, route_of(request), status, time.perf_counter() - started)


async def metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    await _refresh_catalog_size(request.app, metrics)
    registry = metrics.registry
    if metrics.multiprocess_dir is not None:
        if metrics.pool_gauges is not None:
            metrics.pool_gauges.publish(request.app)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_GroupCollector(metrics.multiprocess_dir, metrics.live))
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4  # what every Prometheus parses
    return response


async def _refresh_catalog_size(app: web.Application, metrics: Metrics) -> None:
    """Ask the catalog for its totals right before a scrape (kept as counters, not a scan)."""
    stats = await app[CATALOG].stats()
    metrics.live.catalog = (stats.blobs, stats.bytes_stored, stats.uploads)


def setup_metrics(app: web.Application, multiprocess_dir: Path | None = None) -> None:
    """Give `app` its metrics (call before the app starts); `multiprocess_dir` in a process of a group."""
    app[METRICS] = metrics = Metrics(app, multiprocess_dir)
    if metrics.pool_gauges is not None:
        app.cleanup_ctx.append(_publish_pool_gauges)


async def _publish_pool_gauges(app: web.Application) -> AsyncIterator[None]:
    """Keep this process's pool gauges current in the shared files, for scrapes answered elsewhere."""
    gauges = app[METRICS].pool_gauges
    assert gauges is not None

    async def publish() -> None:
        while True:
            gauges.publish(app)
            await asyncio.sleep(POOL_GAUGE_SECONDS)

    task = asyncio.create_task(publish(), name="rhinobox-pool-gauges")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
