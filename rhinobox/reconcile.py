"""Start-up reconciliation: after a crash, find blobs the catalog does not know and entries without a blob.

Neither is repaired automatically (an orphan blob may be re-claimed by the next upload of the same
bytes; a missing blob needs an operator): both are counted, logged, and shown in `/healthz`.

After an unclean stop (`rhinobox.runmarker`) it runs before serving and also hashes, from the disk,
every orphan and every blob named since the crashed run's last completed sync: a blob renamed in
just before a power cut may have a durable name without its bytes (catalogued too, if its content
was stored again after its blob went missing), and no upload may be answered `duplicate` against
it. Those whose bytes do not match their name are moved to the quarantine directory (`torn_blobs`).
A catalog that shares the blobs' sync (`Catalog.makes_blobs_durable`) may also hold rows written just
before the cut, whose blob's bytes or name did not land: an entry first uploaded since that last sync
was never acknowledged, and is dropped with its uploads (`dropped_entries`). An older entry stays and
counts as missing; the next upload of its content stores it again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import MAX_PAGE, BlobQuery, Catalog
from rhinobox.verify import corrupt_blobs, move_aside

__all__ = ["ReconcileReport", "reconcile"]

log = logging.getLogger(__name__)
BATCH: Final = 1000
SAMPLE_LIMIT: Final = 20


@dataclass(slots=True)
class ReconcileReport:
    """What the last reconciliation found; `state` is `pending`, `running`, `done` or `failed`."""

    state: str = "pending"
    unclean_stop: bool = False  # the last run did not stop cleanly: suspect blobs were hashed before serving
    stale_spool_files: int = 0
    orphan_blobs: int = 0
    missing_blobs: int = 0
    torn_blobs: int = 0  # blobs whose bytes did not match their name (or were unreadable), moved to quarantine
    dropped_entries: int = 0  # catalog entries of torn blobs, first uploaded after the last sync: never acknowledged
    orphan_sample: list[str] = field(default_factory=list)
    missing_sample: list[str] = field(default_factory=list)
    torn_sample: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def reconcile(
    store: BlobStore,
    catalog: Catalog,
    report: ReconcileReport,
    *,
    quarantine_dir: Path | None = None,
    changed_since: float | None = None,
) -> ReconcileReport:
    """Compare the blob store with the catalog, filling `report` as it goes (usually in the background).

    With `quarantine_dir`, orphans and blobs named since `changed_since` are hashed and the torn ones
    moved there first.
    """
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
        torn: set[str] = set()
        if quarantine_dir is not None:
            suspects = await _suspects(store, catalog, orphans, changed_since)
            torn = set(await corrupt_blobs(store, sorted(suspects & on_disk)))
            on_disk -= torn
            orphans = [d for d in orphans if d not in torn]
        missing: list[str] = []
        async for page in catalog.iter_digests(BATCH):
            missing.extend(d for d in page if d not in on_disk)
        if quarantine_dir is not None:
            if changed_since is not None:
                missing = await _drop_unacknowledged(catalog, missing, changed_since, report)
            # Only after the drops: a crash in between finds the torn blobs again, the window unchanged.
            await _move_aside(store, torn, quarantine_dir, report)
        # Uploads keep running meanwhile: look again at each candidate before reporting it.
        known_now = await catalog.known_digests(orphans)
        orphans = [d for d in orphans if d not in known_now]
        for digest in orphans:
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
    if report.torn_blobs:
        log.warning(
            "reconciliation: moved %d blob(s) whose bytes did not match their name to %s"
            " (%d catalog entr(ies) never acknowledged dropped)",
            report.torn_blobs,
            quarantine_dir,
            report.dropped_entries,
        )
    if report.orphan_blobs or report.missing_blobs:
        log.warning(
            "reconciliation: %d blob(s) without catalog entry, %d catalog entr(ies) without blob",
            report.orphan_blobs,
            report.missing_blobs,
        )
    return report


async def _suspects(store: BlobStore, catalog: Catalog, orphans: list[str], changed_since: float | None) -> set[str]:
    """Orphans, blobs named since `changed_since`, and blobs of entries first uploaded since then.

    The entries cover a wall clock stepped back: their blobs' ctimes may then fall before the window,
    but `first_upload_at` never goes back (the catalog clamps it to the newest entry's).
    """
    suspects = set(orphans)
    if changed_since is None:
        return suspects
    loop = asyncio.get_running_loop()
    suspects.update(await loop.run_in_executor(None, lambda: list(store.iter_changed_since(changed_since))))
    before: int | None = None
    while True:
        page = await catalog.list_blobs(BlobQuery(since=changed_since), before=before, limit=MAX_PAGE)
        suspects.update(blob.digest for blob in page.blobs)
        if page.next_before is None:
            return suspects
        before = page.next_before


async def _drop_unacknowledged(
    catalog: Catalog, missing: list[str], changed_since: float, report: ReconcileReport
) -> list[str]:
    """Drop entries without an intact blob that were first uploaded since the last completed sync.

    Such a row was committed after that sync began, and its upload waited for a later sync that
    never completed: it was never acknowledged. Its blob's bytes (torn) or its name (missing) did
    not reach the disk. An entry first uploaded before then was acknowledged; its blob went missing
    later, so it stays and counts as missing. Returns the entries still missing.
    """
    left = []
    for digest in missing:
        blob = await catalog.get_blob(digest)
        if blob is not None and blob.first_upload_at >= changed_since and await catalog.delete_blob(digest):
            report.dropped_entries += 1
        else:
            left.append(digest)
    return left


async def _move_aside(store: BlobStore, torn: set[str], quarantine_dir: Path, report: ReconcileReport) -> None:
    for digest in sorted(torn):
        if await move_aside(store, digest, quarantine_dir):
            report.torn_blobs += 1
            _sample(report.torn_sample, digest)
    if torn:
        await store.flush()


def _sample(sample: list[str], digest: str) -> None:
    if len(sample) < SAMPLE_LIMIT:
        sample.append(digest)
