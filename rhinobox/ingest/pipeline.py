"""`IngestPipeline`: builds the long-lived parts of ingest (pool, arenas, pins, rules) and admits requests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from functools import partial
from typing import Final

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.ingest.buffers import ArenaPool
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.coalesce import SingleFileCoalescer
from rhinobox.ingest.multipart import boundary_from_content_type
from rhinobox.ingest.pending_removals import PendingRemovals
from rhinobox.ingest.pins import HashArbiter, HashPins
from rhinobox.ingest.pool import WorkerPool
from rhinobox.ingest.report import IngestReport
from rhinobox.ingest.resources import IngestLimits, IngestResources
from rhinobox.ingest.session import IngestSession
from rhinobox.ingest.sniff import MimeSniffer
from rhinobox.ingest.stages import StageContext, prepare_in_memory, type_without_libmagic
from rhinobox.settings import FsyncMode, Settings

__all__ = ["IngestPipeline"]

ARENAS_PER_WORKER: Final = 16
WARM_UP_SECONDS: Final = 10.0


class IngestPipeline:
    """Shared by every ingest request of one app; `resources` is what the phases use."""

    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        catalog: Catalog,
        categorizer: Categorizer,
        pins: HashArbiter | None = None,
        sniffer: MimeSniffer | None = None,
    ) -> None:
        pool = WorkerPool(settings.workers, settings.queue_size)
        sniffer = sniffer if sniffer is not None else MimeSniffer(settings.magic_prefilter, settings.magic_native)
        stages = StageContext(store, sniffer, categorizer)
        self.resources = IngestResources(
            store=store,
            catalog=catalog,
            # The backend may arbitrate across nodes (rhinobox.backends.make_arbiter); HashPins is in-process.
            pins=pins if pins is not None else HashPins(),
            pool=pool,
            arenas=ArenaPool(settings.workers * ARENAS_PER_WORKER),
            stages=stages,
            singles=SingleFileCoalescer(
                pool, partial(prepare_in_memory, stages), partial(type_without_libmagic, stages)
            ),
            limits=IngestLimits(
                max_upload_bytes=settings.max_upload_bytes,
                max_files_per_request=settings.max_files_per_request,
                min_free_mb=settings.min_free_mb,
            ),
            spool_writeback=store.inline_io and settings.fsync is FsyncMode.ALWAYS,
            removals=PendingRemovals.in_data_dir(settings.data_dir),
        )

    async def warm_up(self) -> None:
        """Load libmagic in the loop thread and in every worker now, so no request pays for it."""
        sniffer, pool = self.resources.sniffer, self.resources.pool
        sniffer.warm_up()
        barrier = threading.Barrier(pool.workers, timeout=WARM_UP_SECONDS)

        def warm_one_thread() -> None:
            sniffer.warm_up()
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()  # hold this thread so that each task lands on a different one

        await asyncio.gather(*(pool.run_io(warm_one_thread) for _ in range(pool.workers)))

    async def ingest(self, content_type: str | None, body: AsyncIterator[bytes]) -> IngestReport:
        """Ingest one multipart request; raises a `RhinoBoxError` for request-level failures."""
        session, boundary = self.start_session(content_type)
        return await session.run(boundary, body)

    def start_session(self, content_type: str | None) -> tuple[IngestSession, bytes]:
        """Admission checks for a new request, then a session to `receive` and `complete` it."""
        boundary = boundary_from_content_type(content_type)
        self.resources.admit()
        return IngestSession(self.resources), boundary

    def close(self) -> None:
        self.resources.pool.close()
