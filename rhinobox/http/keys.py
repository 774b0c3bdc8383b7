"""Typed application keys: everything a handler needs comes from the app, never from globals."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.pipeline import IngestPipeline
from rhinobox.ingest.resumable import ResumableUploads
from rhinobox.jobs.manager import JobManager
from rhinobox.reconcile import ReconcileReport
from rhinobox.settings import Settings

if TYPE_CHECKING:
    from rhinobox.http.auth import TokenSet
    from rhinobox.http.metrics import Metrics

__all__ = [
    "API_TOKENS",
    "CATALOG",
    "CATEGORIZER",
    "JOBS",
    "METRICS",
    "PIPELINE",
    "RECONCILE",
    "SETTINGS",
    "STORE",
    "UPLOADS",
]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", BlobStore)
CATALOG = web.AppKey("catalog", Catalog)
CATEGORIZER = web.AppKey("categorizer", Categorizer)
PIPELINE = web.AppKey("pipeline", IngestPipeline)
RECONCILE = web.AppKey("reconcile", ReconcileReport)
JOBS = web.AppKey("jobs", JobManager)
UPLOADS = web.AppKey("uploads", ResumableUploads)
# Defined in modules that import this one, hence typed by annotation only.
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
API_TOKENS: web.AppKey[TokenSet] = web.AppKey("api_tokens")
