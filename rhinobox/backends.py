"""Choosing storage backends from settings: the embedded default is SQLite + the local data dir.

`RHINOBOX_CATALOG=postgresql://...` and `RHINOBOX_BLOBS=s3://bucket/prefix` select the shared
backends for several nodes (docs/scale-out.md); `make_arbiter` then arbitrates per hash in PostgreSQL,
and the category rules and async job records live in that database too, so any node serves them.
"""

from __future__ import annotations

import os
from pathlib import Path

from rhinobox.blobs.layout import SPOOL_DIRNAME
from rhinobox.blobs.local import LocalBlobStore
from rhinobox.blobs.s3 import S3BlobStore, parse_s3_url
from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.catalog.postgres import PostgresCatalog
from rhinobox.catalog.postgres_rules import PostgresRulesStore
from rhinobox.catalog.sqlite import CATALOG_FILENAME, SQLiteCatalog
from rhinobox.ingest.hash_locks import FileHashLocks
from rhinobox.ingest.pins import HashArbiter, HashPins
from rhinobox.ingest.rules_store import FileRulesStore, RulesStore
from rhinobox.jobs.postgres import PostgresJobStore
from rhinobox.jobs.sqlite import job_store_for
from rhinobox.jobs.store import JobStore
from rhinobox.settings import FsyncMode, Settings, SettingsError

__all__ = [
    "POSTGRES_SCHEMES",
    "make_arbiter",
    "make_blob_store",
    "make_catalog",
    "make_job_store",
    "make_rules_store",
    "s3_secret_key",
    "shares_data_dir",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def shares_data_dir(settings: Settings) -> bool:
    """Whether servers with these settings may share one data directory (rhinobox.instances): the catalog
    and the per-hash arbitration are in PostgreSQL and the blobs in the data directory. With S3 blobs the
    data directory holds only spool files, one per node (docs/scale-out.md)."""
    return settings.catalog.startswith(POSTGRES_SCHEMES) and not settings.blobs


def make_blob_store(settings: Settings, *, instance_dir: Path | None = None) -> BlobStore:
    """The blob store `settings.blobs` names (not yet opened); its spool (and group) files go to
    `instance_dir` where servers share the data directory, else to the data directory itself."""
    if not settings.blobs:
        return LocalBlobStore(settings.data_dir, durable=settings.fsync is FsyncMode.ALWAYS, instance_dir=instance_dir)
    try:
        location = parse_s3_url(settings.blobs)
    except ValueError as exc:
        raise SettingsError(f"RHINOBOX_BLOBS: {exc}") from None
    if settings.accel_redirect:
        # nginx would look for blob files on this machine's disk; S3 blobs are streamed by RhinoBox.
        raise SettingsError("RHINOBOX_ACCEL_REDIRECT: not available with S3 blobs (leave it empty)")
    return S3BlobStore(
        location,
        (instance_dir or settings.data_dir) / SPOOL_DIRNAME,
        endpoint=settings.s3_endpoint,
        region=settings.s3_region,
        access_key=settings.s3_access_key,
        secret_key=s3_secret_key(settings),
    )


def s3_secret_key(settings: Settings) -> str:
    """The S3 secret key, from `RHINOBOX_S3_SECRET_KEY` or the file `RHINOBOX_S3_SECRET_KEY_FILE` names."""
    if not settings.s3_secret_key_file:
        return settings.s3_secret_key
    if settings.s3_secret_key:
        raise SettingsError("RHINOBOX_S3_SECRET_KEY_FILE: set it or RHINOBOX_S3_SECRET_KEY, not both")
    try:
        secret = Path(settings.s3_secret_key_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"RHINOBOX_S3_SECRET_KEY_FILE: cannot read {settings.s3_secret_key_file!r}: {exc}"
        ) from None
    if not secret:
        raise SettingsError(f"RHINOBOX_S3_SECRET_KEY_FILE: {settings.s3_secret_key_file!r} is empty")
    return secret


def make_catalog(settings: Settings, store: BlobStore | None = None) -> Catalog:
    """The catalog `settings.catalog` names (not yet opened).

    With an open `store` whose sync covers the data directory's disk, a SQLite catalog shares that
    sync instead of making its own (`SQLiteCatalog`): one durable step per upload, not two.
    """
    durable = settings.fsync is FsyncMode.ALWAYS
    if not settings.catalog:
        # The catalog file's real directory (it may be a link to another disk), where its WAL lives too.
        home = Path(os.path.realpath(settings.data_dir / CATALOG_FILENAME)).parent
        sync = store.sync_covering(home) if store is not None and durable else None
        return SQLiteCatalog.in_data_dir(settings.data_dir, durable=durable, sync=sync)
    if settings.catalog.startswith(POSTGRES_SCHEMES):
        return PostgresCatalog(settings.catalog, durable=durable)
    raise SettingsError(f"RHINOBOX_CATALOG: unsupported catalog URL {settings.catalog!r} (expected postgresql://...)")


def make_arbiter(catalog: Catalog, settings: Settings | None = None) -> HashArbiter:
    """Per-hash arbitration for ingest: in the database when several nodes share it, in a lock file
    when several processes share the data directory (`RHINOBOX_PROCESSES`), else in-process.

    A `FileHashLocks` comes back closed: the caller opens it, and closes it after ingest stops.
    """
    if isinstance(catalog, PostgresCatalog):
        return catalog.locks
    if settings is not None and settings.processes > 1:
        return FileHashLocks.in_data_dir(settings.data_dir)
    return HashPins()


def make_rules_store(settings: Settings) -> RulesStore:
    """Where the category rules live (not yet opened): beside the shared catalog, else in the data dir."""
    if settings.catalog.startswith(POSTGRES_SCHEMES):
        return PostgresRulesStore(settings.catalog)
    return FileRulesStore.in_data_dir(settings.data_dir, shared=settings.processes > 1)


def make_job_store(settings: Settings, catalog: Catalog, node_id: str) -> JobStore:
    """Where async job records live (not yet opened); `node_id` names this process as their runner."""
    if isinstance(catalog, PostgresCatalog):
        return PostgresJobStore(catalog.dsn, node_id)
    return job_store_for(catalog, settings.data_dir, node=node_id if settings.processes > 1 else None)
