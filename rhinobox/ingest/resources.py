"""`IngestResources`: the long-lived parts every ingest phase may use, handed over explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.errors import InsufficientStorage
from rhinobox.ingest.buffers import ArenaPool
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.coalesce import SingleFileCoalescer
from rhinobox.ingest.pending_removals import PendingRemovals
from rhinobox.ingest.pins import HashArbiter
from rhinobox.ingest.pool import WorkerPool
from rhinobox.ingest.sniff import MimeSniffer
from rhinobox.ingest.spool import SpoolWriter
from rhinobox.ingest.stages import StageContext

__all__ = ["IngestLimits", "IngestResources"]


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Per-request limits, from the settings."""

    max_upload_bytes: int
    max_files_per_request: int
    min_free_mb: int  # 0: no floor

    @property
    def max_upload_mb(self) -> int:
        return self.max_upload_bytes // (1024 * 1024)


@dataclass(frozen=True, slots=True)
class IngestResources:
    """What receiving, preparing, committing and recording use; built once by `IngestPipeline`."""

    store: BlobStore
    catalog: Catalog
    pins: HashArbiter
    pool: WorkerPool
    arenas: ArenaPool
    stages: StageContext
    singles: SingleFileCoalescer
    limits: IngestLimits
    # A local store syncs each spooled file before answering: start its write-out block by block.
    spool_writeback: bool
    removals: PendingRemovals  # blobs whose removal failed, retried (rhinobox.ingest.delete)

    @property
    def sniffer(self) -> MimeSniffer:
        return self.stages.sniffer

    @property
    def categorizer(self) -> Categorizer:
        return self.stages.categorizer

    def admit(self) -> None:
        """Admission for a new upload: 503 when the queue is full, 507 below the free-space floor."""
        self.pool.admit()
        self.check_free_space()

    def check_free_space(self) -> None:
        """Refuse to start writing when the data disk is below the free-space floor."""
        floor_mb = self.limits.min_free_mb
        if floor_mb <= 0:
            return
        stat = os.statvfs(self.store.spool_dir)
        if stat.f_bavail * stat.f_frsize < floor_mb * 1024 * 1024:
            raise InsufficientStorage(f"less than {floor_mb} MiB free on the data disk")

    def new_spool_writer(self) -> SpoolWriter:
        """A spool file for one large upload (raises a storage error if it cannot be created)."""
        return SpoolWriter(self.stages.spool_names, writeback=self.spool_writeback)
