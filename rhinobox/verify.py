"""Checking the store against its own names and the catalog: corrupt blobs, missing blobs, orphans.

A blob's name is the BLAKE3 of its bytes, so rehashing it proves it intact. `repair` moves corrupt
blobs aside to `<data_dir>/quarantine/` (a re-upload of the same content then stores a good copy
instead of deduplicating against the bad one), drops catalog entries whose blob is gone, and moves
orphans (blobs no catalog entry points at) aside too. Repair only while no server writes to the
data dir (the command takes the data dir lock): the server's per-hash locks do not reach here.

Dropping catalog entries destroys names and history, so repair is refused (`RepairRefused`) when the
blob store looks absent rather than damaged (empty while the catalog is not, or more than a small
share of entries missing) unless forced, and every dropped row is first written to
`quarantine/removed-<timestamp>.jsonl`, from which `removed_records` rebuilds it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import blake3

from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import MAX_PAGE, Catalog, UploadRecord

__all__ = [
    "QUARANTINE_DIRNAME",
    "RepairRefused",
    "VerifyReport",
    "corrupt_blobs",
    "move_aside",
    "quarantine_path",
    "removed_records",
    "repair_refusal",
    "verify",
]

QUARANTINE_DIRNAME: Final = "quarantine"
# What the start-up check counts as a blob that cannot be read (anything else, such as running out of
# descriptors or a permissions mistake, stops the check instead of quarantining an intact blob).
_UNREADABLE_ERRNOS: Final = frozenset({errno.EIO, errno.EUCLEAN, errno.EBADMSG, errno.EISDIR})
HASH_CONCURRENCY: Final = 4  # blobs hashed at once: keeps an NVMe queue busy without starving a server
READ_CHUNK: Final = 1024 * 1024
LOOKUP_BATCH: Final = 1000
# Repair refuses to drop more entries than this (both limits exceeded) without --force: that many
# losses at once is an unmounted or mis-pointed blob directory far more often than real damage.
REFUSE_DROP_SHARE: Final = 0.10
REFUSE_DROP_COUNT: Final = 10

Progress = Callable[[int, int, int], None]  # (blobs hashed, blobs to hash, bytes hashed)


@dataclass(slots=True)
class VerifyReport:
    """What a verification found and, with repair, what it changed. Digest lists are sorted."""

    stored: int = 0
    catalogued: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    sampled: bool = False
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    uncatalogued: list[str] = field(default_factory=list)
    removed_log: str | None = None  # where repair wrote the catalog rows it dropped
    seconds: float = 0.0

    @property
    def problems(self) -> int:
        return len(self.corrupt) + len(self.missing) + len(self.orphans)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "problems": self.problems}


class RepairRefused(Exception):
    """Repair would drop too much of the catalog to be a repair; the report says what was found."""

    def __init__(self, reason: str, report: VerifyReport) -> None:
        super().__init__(reason)
        self.report = report


def repair_refusal(report: VerifyReport) -> str | None:
    """Why dropping this report's dead entries looks like a missing store, not damage (None if it does not)."""
    dropping = len(set(report.missing) | set(report.corrupt))
    if report.stored == 0 and report.catalogued > 0:
        return f"the blob store is empty but the catalog has {report.catalogued} entries"
    if dropping > REFUSE_DROP_COUNT and dropping > REFUSE_DROP_SHARE * report.catalogued:
        return (
            f"{dropping} of {report.catalogued} catalog entries have no intact blob "
            f"(more than {REFUSE_DROP_SHARE:.0%} and more than {REFUSE_DROP_COUNT})"
        )
    return None


async def verify(
    store: BlobStore,
    catalog: Catalog,
    quarantine_dir: Path,
    *,
    sample: int | None = None,
    repair: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    rng: random.Random | None = None,
) -> VerifyReport:
    """Compare store and catalog, rehash every blob (or `sample` random ones), and optionally repair.

    Raises `RepairRefused` (having changed nothing) if repair looks like wiping the catalog and
    `force` is not set.
    """
    started = time.monotonic()
    report = VerifyReport()
    loop = asyncio.get_running_loop()
    stored: set[str] = await loop.run_in_executor(None, lambda: set(store.iter_digests()))
    catalogued: set[str] = set()
    async for page in catalog.iter_digests(LOOKUP_BATCH):
        catalogued.update(page)
    report.stored, report.catalogued = len(stored), len(catalogued)
    report.missing = await _confirm_missing(store, sorted(catalogued - stored))
    report.orphans = await _confirm_orphans(catalog, sorted(stored - catalogued))

    to_hash = sorted(stored)
    if sample is not None and sample < len(to_hash):
        to_hash = sorted((rng or random.Random()).sample(to_hash, sample))
        report.sampled = True
    report.corrupt = await _rehash(store, to_hash, report, progress)

    if repair:
        reason = None if force else repair_refusal(report)
        if reason is not None:
            report.seconds = round(time.monotonic() - started, 3)
            raise RepairRefused(reason, report)
        await _repair(store, catalog, quarantine_dir, report)
    report.seconds = round(time.monotonic() - started, 3)
    return report


async def _confirm_missing(store: BlobStore, candidates: list[str]) -> list[str]:
    """Entries whose blob is still absent on a second look (an upload may have landed meanwhile)."""
    loop = asyncio.get_running_loop()
    return [d for d in candidates if not await loop.run_in_executor(None, store.contains, d)]


async def _confirm_orphans(catalog: Catalog, candidates: list[str]) -> list[str]:
    known: set[str] = set()
    for start in range(0, len(candidates), LOOKUP_BATCH):
        known |= await catalog.known_digests(candidates[start : start + LOOKUP_BATCH])
    return [d for d in candidates if d not in known]


async def corrupt_blobs(store: BlobStore, digests: list[str]) -> list[str]:
    """Those of `digests` whose bytes on the disk (not in the page cache) do not hash to their name.

    A blob that cannot be read (an I/O or filesystem error, or a directory in its place) counts as corrupt.
    """
    return await _rehash(store, digests, VerifyReport(), None, startup_check=True)


async def _rehash(
    store: BlobStore,
    digests: list[str],
    report: VerifyReport,
    progress: Progress | None,
    *,
    startup_check: bool = False,
) -> list[str]:
    """Hash `digests` a few at a time; returns those whose content does not match their name."""
    corrupt: list[str] = []
    queue = iter(digests)

    async def worker() -> None:
        for digest in queue:
            try:
                actual, size = await _hash_blob(store, digest, from_disk=startup_check)
            except OSError as exc:
                if not startup_check or exc.errno not in _UNREADABLE_ERRNOS:
                    raise
                actual, size = "", 0
            report.hashed += 1
            report.hashed_bytes += size
            if actual is not None and actual != digest:
                corrupt.append(digest)
            if progress is not None:
                progress(report.hashed, len(digests), report.hashed_bytes)

    workers = [asyncio.ensure_future(worker()) for _ in range(min(HASH_CONCURRENCY, len(digests)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:  # none goes on hashing after the caller gave up (and closed the store)
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    return sorted(corrupt)


async def _hash_blob(store: BlobStore, digest: str, *, from_disk: bool = False) -> tuple[str | None, int]:
    """(BLAKE3 hex, size) of a stored blob; None if it vanished since the listing (a concurrent delete)."""
    loop = asyncio.get_running_loop()
    path = store.local_path(digest)
    if path is not None:
        try:
            return await loop.run_in_executor(None, partial(hash_file, path, from_disk=from_disk))
        except FileNotFoundError:
            return None, 0
    size = store.size(digest)
    if size is None:
        return None, 0
    hasher = blake3.blake3()
    async for chunk in store.read_range(digest, 0, size):
        hasher.update(chunk)
    return hasher.hexdigest(), size


def hash_file(path: Path, *, from_disk: bool = False) -> tuple[str, int]:
    """BLAKE3 of a file, read in large chunks (BLAKE3 releases the GIL for them).

    With `from_disk`, its clean cached pages are dropped first, so the bytes come from the disk: a
    page cache that outlived a crashed process (or a failed write-back) may hold bytes the disk lacks.
    """
    hasher = blake3.blake3()
    size = 0
    with open(path, "rb", buffering=0) as handle:
        if from_disk:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while chunk := handle.read(READ_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


async def _repair(store: BlobStore, catalog: Catalog, quarantine_dir: Path, report: VerifyReport) -> None:
    """Catalog entry first, then the bytes (as DELETE does): a crash midway leaves an orphan, never a dangling entry.

    The entries about to be dropped are saved first, so a mistaken repair can be undone.
    """
    dropping = sorted(set(report.corrupt) | set(report.missing))
    if dropping:
        report.removed_log = str(await _save_rows(catalog, quarantine_dir, dropping))
    for digest in report.corrupt:
        if await catalog.delete_blob(digest):
            report.uncatalogued.append(digest)
        if await move_aside(store, digest, quarantine_dir):
            report.quarantined.append(digest)
    for digest in report.missing:
        if await catalog.delete_blob(digest):
            report.uncatalogued.append(digest)
    for digest in await _confirm_orphans(catalog, report.orphans):
        if await move_aside(store, digest, quarantine_dir):
            report.quarantined.append(digest)
    await store.flush()
    report.quarantined.sort()
    report.uncatalogued.sort()


async def _save_rows(catalog: Catalog, quarantine_dir: Path, digests: list[str]) -> Path:
    """Write the blob row and upload rows of `digests` as JSON lines (fsynced) to a new file in quarantine."""
    lines: list[str] = []
    for digest in digests:
        blob = await catalog.get_blob(digest)
        if blob is None:
            continue
        lines.append(json.dumps({"kind": "blob", **asdict(blob)}))
        after: int | None = None
        while page := await catalog.list_uploads(digest, after=after, limit=MAX_PAGE):
            lines.extend(json.dumps({"kind": "upload", "digest": digest, **asdict(upload)}) for upload in page)
            after = page[-1].id
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return await asyncio.get_running_loop().run_in_executor(None, _write_log, quarantine_dir, stamp, lines)


def _write_log(quarantine_dir: Path, stamp: str, lines: list[str]) -> Path:
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_path(quarantine_dir, f"removed-{stamp}.jsonl", existing=os.listdir(quarantine_dir))
    with open(target, "x", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
    directory = os.open(quarantine_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target


def removed_records(path: Path) -> list[UploadRecord]:
    """The upload records a repair's `removed-*.jsonl` saved, ready for `Catalog.record_uploads`."""
    blobs: dict[str, dict[str, Any]] = {}
    records: list[UploadRecord] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["kind"] == "blob":
                blobs[row["digest"]] = row
                continue
            blob = blobs[row["digest"]]
            records.append(
                UploadRecord(
                    digest=row["digest"],
                    size=blob["size"],
                    mime=blob["mime"],
                    blob_category=blob["category"],
                    category=row["category"],
                    name=row["name"],
                    hint=row["hint"],
                    comment=row["comment"],
                    claimed_type=row["claimed_type"],
                    uploaded_at=row["uploaded_at"],
                )
            )
    return records


async def move_aside(store: BlobStore, digest: str, quarantine_dir: Path) -> bool:
    """Move a blob out of the store into the quarantine directory (copy then delete for remote stores)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: quarantine_dir.mkdir(parents=True, exist_ok=True))
    target = quarantine_path(quarantine_dir, digest, existing=os.listdir(quarantine_dir))
    path = store.local_path(digest)
    if path is not None:
        try:
            await loop.run_in_executor(None, os.rename, path, target)
        except FileNotFoundError:
            return False
        return True
    size = store.size(digest)
    if size is None:
        return False
    with open(target, "wb") as handle:
        async for chunk in store.read_range(digest, 0, size):
            handle.write(chunk)
    return await loop.run_in_executor(None, store.delete, digest)


def quarantine_path(quarantine_dir: Path, digest: str, existing: Iterable[str]) -> Path:
    """`<digest>`, or `<digest>.<n>` if an earlier repair already put one aside under that name."""
    taken = set(existing)
    name, n = digest, 1
    while name in taken:
        name, n = f"{digest}.{n}", n + 1
    return quarantine_dir / name
