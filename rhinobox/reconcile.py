"""Start-up reconciliation: after a crash, find blobs the catalog does not know and entries without a blob.

Neither is repaired automatically (an orphan blob may be re-claimed by the next upload of the same
bytes; a missing blob needs an operator): both are counted, logged, and shown in `/healthz`. Only the
blobs an earlier run meant to remove and could not (`finish_pending_removals`) go, before serving.

After an unclean stop (`rhinobox.runmarker`) it runs before serving and also hashes, from the disk,
every orphan and every blob named since the crashed run's last completed sync: a blob renamed in
just before a power cut may have a durable name without its bytes (catalogued too, if its content
was stored again after its blob went missing), and no upload may be answered `duplicate` against
it. Those whose bytes do not match their name are moved to the quarantine directory (`torn_blobs`).
A catalog that shares the blobs' sync (`Catalog.makes_blobs_durable`) may also hold rows written just
before the cut, whose blob's bytes or name did not land: an entry first recorded since that last sync
was never acknowledged, and is dropped with its uploads (`dropped_entries`). An older entry, or any
entry in a catalog with its own sync (its rows follow the blobs' sync), stays and counts as missing;
the next upload of its content stores it again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import MAX_PAGE, BlobQuery, Catalog
from rhinobox.ingest.delete import retry_pending_removals
from rhinobox.ingest.pending_removals import PendingRemovals
from rhinobox.ingest.pins import HashArbiter
from rhinobox.runmarker import RunMarker
from rhinobox.verify import QUARANTINE_DIRNAME, corrupt_blobs, move_aside

__all__ = ["ReconcileReport", "finish_pending_removals", "reconcile"]

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
    dropped_entries: int = 0  # entries recorded after the crashed run's last sync, whose blob did not land
    orphan_sample: list[str] = field(default_factory=list)
    missing_sample: list[str] = field(default_factory=list)
    torn_sample: list[str] = field(default_factory=list)
    dropped_sample: list[str] = field(default_factory=list)

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

    With `quarantine_dir` (after an unclean stop), orphans, blobs named since `changed_since` and,
    where the catalog shares the blobs' sync, blobs of entries first recorded since then are hashed;
    entries of that window without an intact blob are dropped, then the torn blobs are moved there.
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
        # Entries first catalogued since the crashed run's last sync: only a catalog that shares the
        # blobs' sync can hold one that was never acknowledged (anywhere else a row follows its sync).
        unsynced_entries: set[str] = set()
        if quarantine_dir is not None and changed_since is not None and catalog.makes_blobs_durable:
            unsynced_entries = await _entries_since(catalog, changed_since)
        if quarantine_dir is not None:
            suspects = await _suspects(store, orphans, changed_since)
            torn = set(await corrupt_blobs(store, sorted((suspects | unsynced_entries) & on_disk)))
            on_disk -= torn
            orphans = [d for d in orphans if d not in torn]
        missing: list[str] = []
        async for page in catalog.iter_digests(BATCH):
            missing.extend(d for d in page if d not in on_disk)
        if quarantine_dir is not None:
            if unsynced_entries:
                missing = await _drop_unacknowledged(catalog, missing, unsynced_entries, report)
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
            "reconciliation: moved %d blob(s) whose bytes did not match their name to %s",
            report.torn_blobs,
            quarantine_dir,
        )
    if report.orphan_blobs or report.missing_blobs:
        log.warning(
            "reconciliation: %d blob(s) without catalog entry, %d catalog entr(ies) without blob",
            report.orphan_blobs,
            report.missing_blobs,
        )
    return report


async def _suspects(store: BlobStore, orphans: list[str], changed_since: float | None) -> set[str]:
    """Orphans, and blobs named since `changed_since`."""
    suspects = set(orphans)
    if changed_since is not None:
        loop = asyncio.get_running_loop()
        suspects.update(await loop.run_in_executor(None, lambda: list(store.iter_changed_since(changed_since))))
    return suspects


async def _entries_since(catalog: Catalog, changed_since: float) -> set[str]:
    """Blobs the catalog first recorded since `changed_since` (an id range: a few index pages).

    Their blobs are hashed too: after a wall clock stepped back, a blob's ctime falls before the
    window, but its entry's `first_upload_at` does not (SQLite clamps it to the newest entry's).
    """
    entries: set[str] = set()
    before: int | None = None
    while True:
        page = await catalog.list_blobs(BlobQuery(since=changed_since), before=before, limit=MAX_PAGE)
        entries.update(blob.digest for blob in page.blobs)
        if page.next_before is None:
            return entries
        before = page.next_before


async def _drop_unacknowledged(
    catalog: Catalog, missing: list[str], unsynced_entries: set[str], report: ReconcileReport
) -> list[str]:
    """Drop the entries without an intact blob among those first recorded since the last completed sync.

    Such a row was committed after that sync began, and its upload waited for a later sync that
    never completed: it was never acknowledged. Its blob's bytes (torn) or its name (missing) did
    not reach the disk. (The window reaches a few seconds further back, for the clock's slack and
    the marker's once-a-second updates: an entry acknowledged in those seconds is dropped too, but
    only if its synced blob has since gone missing or bad, when it would otherwise count as missing.)
    An entry recorded before then stays and counts as missing. Returns the entries still missing.
    """
    doomed = [digest for digest in missing if digest in unsynced_entries]
    # Submitted together: the catalog writer commits (and syncs) them as one group.
    dropped = await asyncio.gather(*(catalog.delete_blob(digest) for digest in doomed))
    gone = [digest for digest, existed in zip(doomed, dropped, strict=True) if existed]
    for digest in gone:
        report.dropped_entries += 1
        _sample(report.dropped_sample, digest)
    if gone:  # every hash, not a sample: the names and comments of these uploads are gone for good
        log.warning(
            "reconciliation: dropped %d catalog entr(ies) whose blob did not reach the disk before the crash: %s",
            len(gone),
            " ".join(gone),
        )
    return [digest for digest in missing if digest not in unsynced_entries]


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


async def check_after_unclean_stop(
    store: BlobStore, catalog: Catalog, marker: RunMarker, report: ReconcileReport, data_dir: Path
) -> None:
    """Before serving, after a run that did not stop cleanly: hash what it may not have synced, then
    mark the check done (a start that fails before then leaves the crashed run's window for the next)."""
    if marker.check_since is None or not store.names_may_outlive_bytes:
        return
    log.warning("the last run did not stop cleanly: hashing blobs it may not have synced before serving")
    await reconcile(
        store, catalog, report, quarantine_dir=data_dir / QUARANTINE_DIRNAME, changed_since=marker.check_since
    )
    await asyncio.get_running_loop().run_in_executor(None, marker.checked)


async def finish_pending_removals(store: BlobStore, catalog: Catalog, pins: HashArbiter, data_dir: Path) -> None:
    """Before serving: remove the blobs earlier runs failed to remove (rhinobox.ingest.pending_removals).

    Each under its hash's hold and only if no row names it, as the running server does (another server
    sharing the data directory may be serving: its pins are respected too); what still fails stays
    pending for the next start (and counts as an orphan meanwhile).
    """
    removals = PendingRemovals.in_data_dir(data_dir)
    if not await asyncio.get_running_loop().run_in_executor(None, removals.load):
        return
    if left := await retry_pending_removals(store, catalog, pins, removals):
        log.warning("%d blob(s) that earlier runs failed to remove could not be removed yet", left)
