"""`IngestPipeline`: the long-lived parts of ingest (pool, arenas, pins, rules) and its entry point."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Final

from rhinobox.blobs.digest import is_digest
from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.errors import DigestMismatch, InsufficientStorage, MalformedMultipart
from rhinobox.ingest.buffers import ArenaPool
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.coalesce import SingleFileCoalescer
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.multipart import PartHeaders, boundary_from_content_type
from rhinobox.ingest.pins import HashArbiter, HashPins
from rhinobox.ingest.pool import WorkerPool
from rhinobox.ingest.session import DIGEST_FIELD_SUFFIX, IngestReport, IngestSession
from rhinobox.ingest.sniff import MimeSniffer
from rhinobox.ingest.spool import SpoolWriter
from rhinobox.ingest.stages import StageContext, prepare_in_memory, type_by_signature
from rhinobox.settings import FsyncMode, Settings

__all__ = ["DIGEST_FIELD_SUFFIX", "IngestPipeline"]

ARENAS_PER_WORKER: Final = 16
WARM_UP_SECONDS: Final = 10.0
CONTENT_DIGEST_HEADER: Final = "content-digest"


class IngestPipeline:
    """Shared by every ingest request of one app."""

    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        catalog: Catalog,
        categorizer: Categorizer,
        pins: HashArbiter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.categorizer = categorizer
        self.sniffer = MimeSniffer()
        self.pool = WorkerPool(settings.workers, settings.queue_size)
        self.arenas = ArenaPool(settings.workers * ARENAS_PER_WORKER)
        # The backend may arbitrate across nodes (rhinobox.backends.make_arbiter); HashPins is in-process.
        self.pins: HashArbiter = pins if pins is not None else HashPins()
        self.stage_context = StageContext(store, self.sniffer, categorizer)
        # A local store syncs each spooled file before answering: start its write-out block by block.
        self._spool_writeback = store.inline_io and settings.fsync is FsyncMode.ALWAYS
        self.singles = SingleFileCoalescer(
            self.pool, partial(prepare_in_memory, self.stage_context), partial(type_by_signature, self.stage_context)
        )

    async def warm_up(self) -> None:
        """Load libmagic in the loop thread and in every worker now, so no request pays for it."""
        self.sniffer.warm_up()
        barrier = threading.Barrier(self.pool.workers, timeout=WARM_UP_SECONDS)

        def warm_one_thread() -> None:
            self.sniffer.warm_up()
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()  # hold this thread so that each task lands on a different one

        await asyncio.gather(*(self.pool.run_io(warm_one_thread) for _ in range(self.pool.workers)))

    async def ingest(self, content_type: str | None, body: AsyncIterator[bytes]) -> IngestReport:
        """Ingest one multipart request; raises a `RhinoBoxError` for request-level failures."""
        session, boundary = self.start_session(content_type)
        return await session.run(boundary, body)

    def start_session(self, content_type: str | None) -> tuple[IngestSession, bytes]:
        """Admission checks for a new request, then a session to `receive` and `complete` it."""
        boundary = boundary_from_content_type(content_type)
        self.pool.admit()
        self.check_free_space()
        return IngestSession(self), boundary

    def new_spool_writer(self) -> SpoolWriter:
        """A spool file for one large upload (raises a storage error if it cannot be created)."""
        return SpoolWriter(self.stage_context.spool_names, writeback=self._spool_writeback)

    def check_free_space(self) -> None:
        """Refuse to start writing when the data disk is below the free-space floor."""
        if self.settings.min_free_mb <= 0:
            return
        stat = os.statvfs(self.store.spool_dir)
        if stat.f_bavail * stat.f_frsize < self.settings.min_free_mb * 1024 * 1024:
            raise InsufficientStorage(f"less than {self.settings.min_free_mb} MiB free on the data disk")

    def expected_digest(self, headers: PartHeaders, fields: Mapping[str, str]) -> str | None:
        """The digest a client declared for a file part: `Content-Digest` header or `<field>.blake3` field."""
        declared = headers.headers.get(CONTENT_DIGEST_HEADER)
        if declared is not None:
            return parse_content_digest(declared)
        field_value = fields.get(headers.field + DIGEST_FIELD_SUFFIX)
        if field_value is not None:
            value = field_value.strip().lower()
            if not is_digest(value):
                raise MalformedMultipart(f"field {headers.field + DIGEST_FIELD_SUFFIX!r} is not a BLAKE3 hex digest")
            return value
        return None

    @staticmethod
    def digest_mismatch(entry: FileEntry) -> DigestMismatch:
        return DigestMismatch(f"content hashes to {entry.digest}, not the declared {entry.expected_digest}")

    def close(self) -> None:
        self.pool.close()


def parse_content_digest(value: str) -> str:
    """`blake3=<64 hex>` or RFC 9530 style `blake3=:<base64>:`; other algorithms are refused."""
    for item in value.split(","):
        algorithm, _, encoded = item.strip().partition("=")
        if algorithm.strip().lower() != "blake3":
            continue
        encoded = encoded.strip()
        if encoded.startswith(":") and encoded.endswith(":") and len(encoded) > 2:
            try:
                raw = base64.b64decode(encoded[1:-1], validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) == 32:
                return raw.hex()
        elif is_digest(encoded.lower()):
            return encoded.lower()
        raise MalformedMultipart("Content-Digest blake3 value must be 64 hex or :base64: of 32 bytes")
    raise MalformedMultipart("Content-Digest must carry a blake3 digest")
