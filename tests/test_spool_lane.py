"""A request's arenas are sniffed on several workers at once, but their spool files are written one
worker at a time (the spool lane): small-file creation from two threads costs more and gains nothing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType

from rhinobox.blobs.local import LocalBlobStore
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.sniff import MimeSniffer
from rhinobox.ingest.stages import StageContext, prepare_in_memory
from tests.helpers import entry_of, png


def context(local_store: LocalBlobStore, sniffer: MimeSniffer | None = None) -> StageContext:
    return StageContext(local_store, sniffer or MimeSniffer(), Categorizer.load(local_store.spool_dir.parent))


class WatchingLane:
    """A lane that checks, as it is entered and left, what has been done to the entries."""

    def __init__(self, entries: list[FileEntry]) -> None:
        self.entries = entries
        self.entered = 0
        self.typed_on_entry: list[str | None] = []
        self.spooled_on_entry: list[bool] = []

    def __enter__(self) -> None:
        self.entered += 1
        self.typed_on_entry = [e.mime for e in self.entries]
        self.spooled_on_entry = [e.spool_path is not None for e in self.entries]

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None


def test_files_are_typed_before_the_lane_and_spooled_inside_it(local_store: LocalBlobStore) -> None:
    entries = [entry_of(png(seed), seed) for seed in range(5)]
    lane = WatchingLane(entries)
    prepare_in_memory(context(local_store), entries, spool_lane=lane)
    assert lane.entered == 1
    assert lane.typed_on_entry == ["image/png"] * 5
    assert lane.spooled_on_entry == [False] * 5
    for seed, entry in enumerate(entries):
        assert entry.spool_path is not None
        assert Path(entry.spool_path).read_bytes() == png(seed)


def test_stored_content_never_enters_the_lane(local_store: LocalBlobStore) -> None:
    entry = entry_of(png(7))
    ctx = context(local_store)
    prepare_in_memory(ctx, [entry])
    assert entry.spool_path is not None
    assert entry.digest is not None
    local_store.commit(entry.spool_path, entry.digest)
    again = entry_of(png(7))
    lane = WatchingLane([again])
    prepare_in_memory(ctx, [again], defer_known=True, spool_lane=lane)
    assert lane.entered == 0
    assert again.spool_path is None
    assert again.mime is None  # typed later from the catalog


class RendezvousSniffer(MimeSniffer):
    """Each sniff waits until two threads are sniffing at once (breaks if they never are)."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=10)

    def sniff(self, head: bytes | memoryview) -> str:
        self.barrier.wait()
        return super().sniff(head)


def test_two_arenas_of_one_request_are_sniffed_at_once_while_one_holds_the_lane(local_store: LocalBlobStore) -> None:
    """The lane covers only the spool writes: sniffing in two workers overlaps even while it is held."""
    sniffer = RendezvousSniffer()
    ctx = context(local_store, sniffer)
    lane = threading.Lock()
    arenas = [[entry_of(bytes([n]) * 4096 + bytes([i]), i) for i in range(3)] for n in (1, 2)]
    errors: list[BaseException] = []

    def prepare(entries: list[FileEntry]) -> None:
        try:
            prepare_in_memory(ctx, entries, spool_lane=lane)
        except BaseException as exc:  # a broken barrier: the sniffs never overlapped
            errors.append(exc)

    with lane:  # held throughout the sniffing: both arenas must still get through it
        threads = [threading.Thread(target=prepare, args=(entries,)) for entries in arenas]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while sum(e.mime is not None for entries in arenas for e in entries) < 6 and not errors:
            assert time.monotonic() < deadline, "the arenas were not sniffed while the lane was held"
            time.sleep(0.01)
        assert not errors
        assert all(e.spool_path is None for entries in arenas for e in entries)  # waiting for the lane
    for thread in threads:
        thread.join(10)
    assert not errors
    assert all(e.spool_path is not None and Path(e.spool_path).exists() for entries in arenas for e in entries)
