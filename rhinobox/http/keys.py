"""Typed application keys: everything a handler needs comes from the app, never from globals."""

from __future__ import annotations

from aiohttp import web

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.pipeline import IngestPipeline
from rhinobox.reconcile import ReconcileReport
from rhinobox.settings import Settings

__all__ = ["CATALOG", "CATEGORIZER", "PIPELINE", "RECONCILE", "SETTINGS", "STORE"]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", BlobStore)
CATALOG = web.AppKey("catalog", Catalog)
CATEGORIZER = web.AppKey("categorizer", Categorizer)
PIPELINE = web.AppKey("pipeline", IngestPipeline)
RECONCILE = web.AppKey("reconcile", ReconcileReport)
