"""The blocking steps of the pipeline, run on worker threads (or inline for a single file).

Each takes a list of entries so that one thread hop serves many small files.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from rhinobox.blobs.store import BlobStore
from rhinobox.errors import RhinoBoxError, StorageError, storage_failure
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.documents import DocumentScan
from rhinobox.ingest.entry import DUPLICATE, STORED, FileEntry
from rhinobox.ingest.sniff import MimeSniffer
from rhinobox.ingest.spool import SpoolNames, remove_spool_file, write_spool_file

__all__ = ["StageContext", "commit_entries", "prepare_in_memory", "prepare_spooled", "type_without_libmagic"]


@dataclass(frozen=True, slots=True)
class StageContext:
    """What the stages need from the app."""

    store: BlobStore
    sniffer: MimeSniffer
    categorizer: Categorizer
    spool_names: SpoolNames = field(init=False)  # in the store's spool directory

    def __post_init__(self) -> None:
        object.__setattr__(self, "spool_names", SpoolNames(self.store.spool_dir))


def type_without_libmagic(ctx: StageContext, entry: FileEntry) -> bool:
    """Type and categorize an arena file when no libmagic call is needed; False if it is.

    Microseconds (a signature, or plain text or bytes no soft-magic test can type): what lets a
    caller decide to prepare the file on the event loop.
    """
    assert entry.arena is not None
    mime = ctx.sniffer.sniff_without_libmagic(entry.arena.view[entry.offset : entry.offset + entry.size])
    if mime is None:
        return False
    entry.mime = mime
    entry.blob_category = ctx.categorizer.categorize(mime, entry.extension)
    return True


def prepare_in_memory(
    ctx: StageContext,
    entries: Sequence[FileEntry],
    *,
    defer_known: bool = False,
    spool_lane: AbstractContextManager[object] | None = None,
) -> None:
    """Sniff, categorize, and spool (unless the blob is already stored) files held in an arena.

    The digest is already known and pinned, so `contains` cannot be invalidated by a delete. A network
    store is not asked: its commit looks anyway, and a local spool write is cheaper than a round trip.
    With `defer_known`, content already stored is not sniffed at all: the caller takes its type from
    the catalog in one query for the whole request (`mime` stays None until then). A file already
    typed (`type_without_libmagic`) is not sniffed again.

    The spool writes run under `spool_lane` when given: the arenas of one request are prepared on
    several workers, and sniffing gains from that, but small-file creation does not. Two threads
    creating files took twice the CPU per file of one and finished later (directory and inode-allocation
    locks in the kernel, the GIL handed back and forth on every syscall).
    """
    rules = ctx.categorizer.snapshot()
    to_spool: list[FileEntry] = []
    for entry in entries:
        assert entry.arena is not None
        assert entry.digest is not None
        try:
            stored = ctx.store.inline_io and ctx.store.contains(entry.digest)
            if stored and defer_known:
                continue
            if entry.mime is None:
                entry.mime = ctx.sniffer.sniff_document(entry.arena.view[entry.offset : entry.offset + entry.size])
                entry.blob_category = rules.categorize(entry.mime, entry.extension)
        except RhinoBoxError as exc:
            entry.fail(exc)
            continue
        except OSError as exc:
            entry.fail(StorageError(f"could not look up the blob ({exc.strerror})"))
            continue
        if not stored:
            to_spool.append(entry)
    if to_spool:
        with spool_lane if spool_lane is not None else nullcontext():
            _spool_all(ctx.spool_names, to_spool)


def _spool_all(spool_names: SpoolNames, entries: Sequence[FileEntry]) -> None:
    for entry in entries:
        assert entry.arena is not None
        try:
            entry.spool_path = write_spool_file(spool_names, entry.arena.view[entry.offset : entry.offset + entry.size])
        except RhinoBoxError as exc:
            entry.fail(exc)
        except OSError as exc:
            entry.fail(StorageError(f"could not spool the file ({exc.strerror})"))


def prepare_spooled(ctx: StageContext, entry: FileEntry, evidence: DocumentScan | bytes) -> None:
    """Sniff and categorize a file already spooled; drop the spool file if the blob is stored.

    `evidence` is the spool writer's `scan` (the whole document, as `file` sees it), or only a head.
    """
    assert entry.digest is not None
    assert entry.spool_path is not None
    if isinstance(evidence, DocumentScan):
        entry.mime = ctx.sniffer.sniff_scan(evidence)
    else:
        entry.mime = ctx.sniffer.sniff(evidence)
    entry.blob_category = ctx.categorizer.categorize(entry.mime, entry.extension)
    if ctx.store.inline_io and ctx.store.contains(entry.digest):  # a network store's commit looks anyway
        remove_spool_file(entry.spool_path)
        entry.spool_path = None


def commit_entries(store: BlobStore, entries: Sequence[FileEntry]) -> None:
    """Move spooled files into the store; mark each entry stored or duplicate."""
    for entry in entries:
        if not entry.ok:
            continue
        assert entry.digest is not None
        if entry.spool_path is None:
            entry.status = DUPLICATE
            continue
        try:
            created = store.commit(entry.spool_path, entry.digest)
        except OSError as exc:
            entry.fail(storage_failure(exc, "store the file"))  # full: a directory that needed a new block
            continue
        finally:
            entry.spool_path = None
        entry.status = STORED if created else DUPLICATE
