"""Choosing storage backends from settings: the embedded default is SQLite + the local data dir."""

from __future__ import annotations

from rhinobox.blobs.local import LocalBlobStore
from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.settings import FsyncMode, Settings

__all__ = ["make_blob_store", "make_catalog"]


def make_blob_store(settings: Settings) -> BlobStore:
    """The blob store `settings.blobs` names (not yet opened)."""
    if settings.blobs:
        raise ValueError(f"RHINOBOX_BLOBS: unsupported blob store URL {settings.blobs!r}")
    return LocalBlobStore(settings.data_dir, durable=settings.fsync is FsyncMode.ALWAYS)


def make_catalog(settings: Settings) -> Catalog:
    """The catalog `settings.catalog` names (not yet opened)."""
    if settings.catalog:
        raise ValueError(f"RHINOBOX_CATALOG: unsupported catalog URL {settings.catalog!r}")
    return SQLiteCatalog.in_data_dir(settings.data_dir, durable=settings.fsync is FsyncMode.ALWAYS)
