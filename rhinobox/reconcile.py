"""Start-up reconciliation: after a crash, find blobs the catalog does not know and entries without a blob.

Neither is repaired automatically (an orphan blob may be re-claimed by the next upload of the same
bytes; a missing blob needs an operator): both are counted, logged, and shown in `/healthz`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog

__all__ = ["ReconcileReport", "reconcile"]

log = logging.getLogger(__name__)
BATCH: Final = 1000
SAMPLE_LIMIT: Final = 20


@dataclass(slots=True)
class ReconcileReport:
    """What the last reconciliation found; `state` is `pending`, `running`, `done` or `failed`."""

    state: str = "pending"
    stale_spool_files: int = 0
    orphan_blobs: int = 0
    missing_blobs: int = 0
    orphan_sample: list[str] = field(default_factory=list)
    missing_sample: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def reconcile(store: BlobStore, catalog: Catalog, report: ReconcileReport) -> ReconcileReport:
    """Compare the blob store with the catalog, filling `report` as it goes (it runs in the background)."""
    report.state = "running"
    try:
        loop = asyncio.get_running_loop()
        stored: list[str] = await loop.run_in_executor(None, lambda: list(store.iter_digests()))
        orphans: list[str] = []
        for start in range(0, len(stored), BATCH):
            batch = stored[start : start + BATCH]
            known = await catalog.known_digests(batch)
            orphans.extend(d for d in batch if d not in known)
        on_disk = set(stored)
        del stored
        missing: list[str] = []
        async for page in catalog.iter_digests(BATCH):
            missing.extend(d for d in page if d not in on_disk)
        # Uploads keep running meanwhile: look again at each candidate before reporting it.
        known_now = await catalog.known_digests(orphans)
        for digest in orphans:
            if digest not in known_now:
                report.orphan_blobs += 1
                _sample(report.orphan_sample, digest)
        for digest in missing:
            if not await loop.run_in_executor(None, store.contains, digest):
                report.missing_blobs += 1
                _sample(report.missing_sample, digest)
        report.state = "done"
    except Exception:
        report.state = "failed"
        log.exception("reconciliation failed")
        raise
    if report.orphan_blobs or report.missing_blobs:
        log.warning(
            "reconciliation: %d blob(s) without catalog entry, %d catalog entr(ies) without blob",
            report.orphan_blobs,
            report.missing_blobs,
        )
    return report


def _sample(sample: list[str], digest: str) -> None:
    if len(sample) < SAMPLE_LIMIT:
        sample.append(digest)
