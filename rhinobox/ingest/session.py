"""One request's trip through the pipeline: stream parts off the socket, prepare, commit, record.

Small files are packed into pooled arenas, hashed on the loop (microseconds for a few KiB), pinned,
and handed to the worker pool an arena at a time. Large files stream to a spool file through a
worker. A request with one small file never leaves the event loop thread (the fast path).
Whatever happens, the session leaves no spool file behind and releases every arena and pin, and it
never abandons work it handed to a thread: cleanup waits for the thread before touching its files.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Final

from rhinobox.catalog.base import UploadRecord
from rhinobox.errors import (
    EmptyFile,
    FieldTooLarge,
    FileTooLarge,
    InsufficientStorage,
    NoFiles,
    RhinoBoxError,
    StorageError,
    TooManyFiles,
    storage_failure,
)
from rhinobox.ingest.blocks import BlockSpooler
from rhinobox.ingest.buffers import Arena
from rhinobox.ingest.entry import STORED, FileEntry
from rhinobox.ingest.loophash import digest_keeping_gil
from rhinobox.ingest.multipart import PART_DATA, PART_END, PART_START, MultipartStream, PartHeaders
from rhinobox.ingest.names import clean_filename, clean_hint, extension_of
from rhinobox.ingest.sniff import SNIFF_BYTES
from rhinobox.ingest.spool import remove_spool_file
from rhinobox.ingest.stages import commit_entries, prepare_in_memory, prepare_spooled

if TYPE_CHECKING:
    from rhinobox.ingest.pipeline import IngestPipeline

__all__ = ["IngestReport", "IngestSession", "Progress", "upload_category"]

SMALL_FILE_MAX: Final = 128 * 1024  # larger files stream to a spool file instead of an arena
ARENA_MAX_FILES: Final = 64  # files handed to a worker in one task
COMMIT_CHUNK: Final = 256
MAX_FIELD_BYTES: Final = 64 * 1024  # one text field
MAX_FIELDS_TOTAL_BYTES: Final = 1024 * 1024  # all text fields of a request, kept or not
MAX_EXTRA_PARTS: Final = 1000  # parts past the file limit answered one by one; more fail the request
HINT_FIELD: Final = "category"
COMMENT_FIELD: Final = "comment"
DIGEST_FIELD_SUFFIX: Final = ".blake3"

Progress = Callable[[FileEntry], None]


def upload_category(blob_category: str, hint: str | None) -> str:
    """The category of one upload: its blob's category, with the request's hint as a sub-folder."""
    return f"{blob_category}/{hint}" if hint else blob_category


class IngestReport:
    """The outcome of one request: every file part in order, and the form's text fields."""

    def __init__(self, entries: list[FileEntry], hint: str | None, comment: str | None) -> None:
        self.entries = entries
        self.hint = hint
        self.comment = comment

    def category_of(self, entry: FileEntry) -> str | None:
        return upload_category(entry.blob_category, self.hint) if entry.blob_category else None


class _Part:
    """The part being streamed: a text field (bytes, kept only for the fields ingest uses) or a file."""

    __slots__ = ("entry", "field", "keep", "text")

    def __init__(self, field: str, entry: FileEntry | None) -> None:
        self.field = field
        self.entry = entry
        self.keep = entry is None and (field in (HINT_FIELD, COMMENT_FIELD) or field.endswith(DIGEST_FIELD_SUFFIX))
        self.text = bytearray()


class IngestSession:
    """Per-request state: `receive` the body, then `complete` it (or `run` for both)."""

    def __init__(self, pipeline: IngestPipeline) -> None:
        self._p = pipeline
        self._entries: list[FileEntry] = []
        self._fields: dict[str, str] = {}
        self._field_bytes = 0
        self._part: _Part | None = None
        self._arena: Arena | None = None
        self._arena_entries: list[FileEntry] = []
        self._threads: list[asyncio.Future[None]] = []  # work handed to worker threads
        self._dispatched = False
        self._first_of_digest: dict[str, FileEntry] = {}
        self._left = False
        self._spool_lane = threading.Lock()  # this request's small-file spool writes, one worker at a time
        pipeline.singles.enter()

    async def run(self, boundary: bytes, body: AsyncIterator[bytes]) -> IngestReport:
        """Receive the whole body, then store and record every file; the synchronous endpoint."""
        await self.receive(boundary, body)
        return await self.complete()

    async def receive(self, boundary: bytes, body: AsyncIterator[bytes]) -> int:
        """Stream the body off the socket; every file is then buffered or spooled. Returns the file count.

        On failure everything is released and the error propagates; on success call `complete`.
        """
        try:
            await self._stream(boundary, body)
            if not self._entries:
                raise NoFiles()
        except BaseException:
            await self._cleanup()
            raise
        return len(self._entries)

    async def complete(self, progress: Progress | None = None, chunk_files: int | None = None) -> IngestReport:
        """Prepare, commit and record the received files; the results keep the request's order.

        With `progress`, files are committed and recorded `chunk_files` at a time and `progress` is
        called with each file once its result is final (async jobs report live progress this way).
        """
        try:
            await self._prepare_rest()
            step = chunk_files if progress is not None and chunk_files else len(self._entries)
            for start in range(0, len(self._entries), step):
                chunk = self._entries[start : start + step]
                await self._commit(chunk)
                await self._record(chunk)
                if progress is not None:
                    for entry in chunk:
                        progress(entry)
            return IngestReport(self._entries, self.hint, self.comment)
        finally:
            await self._cleanup()

    @property
    def hint(self) -> str | None:
        raw = self._fields.get(HINT_FIELD)
        return clean_hint(raw) if raw else None

    @property
    def comment(self) -> str | None:
        return self._fields.get(COMMENT_FIELD)

    # -- streaming -------------------------------------------------------------------------

    async def _stream(self, boundary: bytes, body: AsyncIterator[bytes]) -> None:
        parser = MultipartStream(boundary)
        async for chunk in body:
            for kind, payload in parser.feed(chunk):
                if kind == PART_DATA:
                    assert isinstance(payload, memoryview)
                    await self._on_data(payload)
                elif kind == PART_START:
                    assert isinstance(payload, PartHeaders)
                    self._on_start(payload)
                elif kind == PART_END:
                    await self._on_end()
        parser.finish()

    def _on_start(self, headers: PartHeaders) -> None:
        if headers.filename is None:
            part = self._part = _Part(headers.field, None)
            if part.keep:  # a kept field's name is held until the request ends: it counts too
                self._charge_field_bytes(len(headers.field))
            return
        name = clean_filename(headers.filename)
        entry = FileEntry(
            index=len(self._entries),
            name=name,
            extension=extension_of(name),
            claimed_type=headers.content_type,
            expected_digest=self._p.expected_digest(headers, self._fields),
        )
        self._fields.pop(headers.field + DIGEST_FIELD_SUFFIX, None)  # a declared digest is for one file
        limit = self._p.settings.max_files_per_request
        if len(self._entries) >= limit:
            if len(self._entries) >= limit + MAX_EXTRA_PARTS:
                raise TooManyFiles(f"at most {limit} files per request")
            entry.fail(TooManyFiles(f"at most {limit} files per request"))
        self._entries.append(entry)
        self._part = _Part(headers.field, entry)

    async def _on_data(self, data: memoryview) -> None:
        part = self._part
        assert part is not None
        entry = part.entry
        if entry is None:
            self._on_field_data(part, data)
            return
        if not entry.ok:
            return
        entry.size += len(data)
        if entry.size > self._p.settings.max_upload_bytes:
            await self._drop_bytes(entry)
            entry.fail(FileTooLarge(f"files may be at most {self._p.settings.max_upload_mb} MiB"))
        elif entry.writer is not None:
            await self._write_block(entry, data)
        elif entry.size > SMALL_FILE_MAX:
            await self._spill_to_spool(entry, data)
        else:
            await self._append_to_arena(entry, data)

    def _charge_field_bytes(self, count: int) -> None:
        self._field_bytes += count
        if self._field_bytes > MAX_FIELDS_TOTAL_BYTES:
            raise FieldTooLarge(f"text fields of one request are limited to {MAX_FIELDS_TOTAL_BYTES} bytes")

    def _on_field_data(self, part: _Part, data: memoryview) -> None:
        self._charge_field_bytes(len(data))
        if len(part.text) + len(data) > MAX_FIELD_BYTES:
            raise FieldTooLarge(f"text field {part.field!r} is over {MAX_FIELD_BYTES} bytes")
        if part.keep:
            part.text += data

    async def _on_end(self) -> None:
        part, self._part = self._part, None
        assert part is not None
        if part.entry is None:
            if part.keep:
                self._fields[part.field] = part.text.decode("utf-8", errors="replace")
            return
        entry = part.entry
        if entry.ok and entry.size == 0:
            entry.fail(EmptyFile())
        if not entry.ok:
            return
        if entry.writer is not None:
            await self._finish_spool(entry)
            return
        assert entry.arena is not None
        entry.digest = digest_keeping_gil(entry.arena.view[entry.offset : entry.offset + entry.size])
        if not self._verify_expected(entry):
            entry.arena = None
            self._rewind_arena(entry)
            return
        await self._pin(entry)
        self._arena_entries.append(entry)
        if len(self._arena_entries) >= ARENA_MAX_FILES:
            await self._dispatch_arena()

    # -- arenas ----------------------------------------------------------------------------

    async def _append_to_arena(self, entry: FileEntry, data: memoryview) -> None:
        if entry.arena is None:
            if self._arena is None or self._arena.free < len(data):
                await self._dispatch_arena()
                self._arena = await self._p.arenas.acquire()
            entry.arena, entry.offset = self._arena, self._arena.used
        elif entry.arena.free < len(data):
            # The file outgrew what is left of this arena: move its bytes to a fresh one.
            so_far = bytes(entry.arena.view[entry.offset : entry.arena.used])
            self._rewind_arena(entry)
            await self._dispatch_arena()
            self._arena = await self._p.arenas.acquire()
            entry.arena, entry.offset = self._arena, 0
            self._arena.append(so_far)
        entry.arena.append(data)

    def _rewind_arena(self, entry: FileEntry) -> None:
        """Forget the bytes of the file being streamed (always the last one in the current arena)."""
        if self._arena is not None and entry.offset <= self._arena.used:
            self._arena.used = entry.offset

    async def _drop_bytes(self, entry: FileEntry) -> None:
        """Discard what was received of a failed file (its spool file, or its arena bytes)."""
        if entry.writer is not None:
            writer, entry.writer = entry.writer, None
            await writer.abort()
        elif entry.arena is not None:
            entry.arena = None
            self._rewind_arena(entry)

    async def _dispatch_arena(self) -> None:
        """Hand the current arena's finished files to a worker; the arena returns to the pool after."""
        arena, entries = self._arena, self._arena_entries
        self._arena, self._arena_entries = None, []
        if arena is None:
            return
        if not entries:
            self._p.arenas.release(arena)
            return
        self._dispatched = True
        work = partial(prepare_in_memory, self._p.stage_context, entries, defer_known=True, spool_lane=self._spool_lane)
        try:
            reserved = await self._p.pool.reserve(len(entries))
        except BaseException:
            self._p.arenas.release(arena)
            raise
        self._threads.append(self._p.pool.submit(reserved, work, on_done=partial(self._p.arenas.release, arena)))

    # -- large files -----------------------------------------------------------------------

    async def _spill_to_spool(self, entry: FileEntry, data: memoryview) -> None:
        try:
            spooler = BlockSpooler(self._p.pool, self._p.new_spool_writer())
        except RhinoBoxError as exc:
            await self._drop_bytes(entry)
            entry.fail(exc)
            return
        entry.writer = spooler
        if entry.arena is not None:
            head = bytes(entry.arena.view[entry.offset : entry.arena.used])
            self._rewind_arena(entry)
            entry.arena = None
            await spooler.append(head)
        await self._dispatch_arena()  # a large file holds no arena while it streams
        await self._write_block(entry, data)

    async def _write_block(self, entry: FileEntry, data: memoryview) -> None:
        assert entry.writer is not None
        try:
            await entry.writer.append(data)
        except RhinoBoxError as exc:
            await self._drop_bytes(entry)
            entry.fail(exc)

    async def _finish_spool(self, entry: FileEntry) -> None:
        spooler = entry.writer
        assert spooler is not None
        try:
            entry.digest = await spooler.finish()
        except RhinoBoxError as exc:
            await self._drop_bytes(entry)
            entry.fail(exc)
            return
        except OSError as exc:
            await self._drop_bytes(entry)
            entry.fail(storage_failure(exc, "finish the spool file"))
            return
        entry.spool_path, entry.writer = spooler.writer.path, None
        if not self._verify_expected(entry):
            return
        await self._pin(entry)
        prepare = partial(prepare_spooled, self._p.stage_context, entry, spooler.writer.head[:SNIFF_BYTES])
        try:
            if self._p.store.inline_io:
                prepare()
            else:
                future = self._p.pool.submit_io(prepare)
                self._threads.append(future)
                await asyncio.shield(future)
        except OSError as exc:
            entry.fail(StorageError(f"could not read the spooled file ({exc.strerror})"))

    # -- checks, pins ----------------------------------------------------------------------

    def _verify_expected(self, entry: FileEntry) -> bool:
        if entry.expected_digest is None or entry.expected_digest == entry.digest:
            return True
        entry.fail(self._p.digest_mismatch(entry))
        if entry.spool_path is not None:
            remove_spool_file(entry.spool_path)
            entry.spool_path = None
        return False

    async def _pin(self, entry: FileEntry) -> None:
        assert entry.digest is not None
        await self._p.pins.pin(entry.digest)
        entry.pinned = True

    # -- after the body --------------------------------------------------------------------

    async def _prepare_rest(self) -> None:
        if (
            self._p.store.inline_io
            and not self._dispatched
            and len(self._arena_entries) == 1
            and len(self._entries) == 1
        ):
            # The fast path: one small file, prepared inline on the loop when it is alone, or with the
            # other single-file requests of this moment in one shared worker task under load.
            shared = self._p.singles.prepare(self._arena_entries[0])
            self._arena_entries = []
            if shared is not None:
                self._threads.append(shared)
            await self._wait_threads()
            if self._arena is not None:  # only now: a shared worker task may have been reading it
                self._p.arenas.release(self._arena)
                self._arena = None
            return
        await self._dispatch_arena()
        await self._wait_threads()
        await self._type_known_content()

    async def _type_known_content(self) -> None:
        """Give content that was already stored its recorded type: one catalog query, no sniffing."""
        unknown = [e for e in self._entries if e.ok and e.digest is not None and e.mime is None]
        if not unknown:
            return
        known = await self._p.catalog.known_mimes(e.digest for e in unknown if e.digest is not None)
        rules = self._p.categorizer.snapshot()
        for entry in unknown:
            assert entry.digest is not None
            mime = known.get(entry.digest)
            if mime is None:  # a blob the catalog does not know (left by a crash): look at its bytes
                head = b"".join([chunk async for chunk in self._p.store.read_range(entry.digest, 0, SNIFF_BYTES)])
                mime = self._p.sniffer.sniff(head)
            entry.mime = mime
            entry.blob_category = rules.categorize(mime, entry.extension)

    async def _wait_threads(self) -> None:
        """Wait for every thread task of this request; re-raise the first unexpected error."""
        threads = self._threads
        if not threads:
            return
        await asyncio.wait(threads)
        self._threads = []  # only now: if this wait is cancelled, `_cleanup` must still wait for them
        for future in threads:
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    async def _commit(self, entries: list[FileEntry]) -> None:
        store = self._p.store
        repeats = self._drop_repeats(entries)
        spooled = [e for e in entries if e.ok and e.spool_path is not None]
        ready = [e for e in entries if e.ok and e.digest is not None]
        # Exactly one concurrent commit of the same new content sends it and answers `stored`. A local
        # store's rename-without-replace already decides that, so it skips the guard's bookkeeping.
        guarded = () if store.inline_io else (e.digest for e in spooled if e.digest is not None)
        async with self._p.pins.committing(guarded):
            if len(ready) <= 1 and store.inline_io:
                commit_entries(store, ready)
            elif store.inline_io:
                # Local renames one chunk at a time: spread over several workers, they contend in the
                # kernel and take more CPU per file for no gain (docs/performance.md, round 4). A chunk
                # takes at most a quarter of the queue's slots, so a request as large as the queue
                # never waits for it to be empty.
                step = max(ARENA_MAX_FILES, self._p.pool.capacity // 4)
                for i in range(0, len(ready), step):
                    chunk = ready[i : i + step]
                    reserved = await self._p.pool.reserve(len(chunk))
                    self._threads.append(self._p.pool.submit(reserved, partial(commit_entries, store, chunk)))
                    await self._wait_threads()
            else:
                # Spread over the workers (a network store's commit is a round trip per file).
                step = max(1, min(COMMIT_CHUNK, -(-len(ready) // self._p.pool.workers)))
                for i in range(0, len(ready), step):
                    chunk = ready[i : i + step]
                    reserved = await self._p.pool.reserve(len(chunk))
                    self._threads.append(self._p.pool.submit(reserved, partial(commit_entries, store, chunk)))
                await self._wait_threads()
        for repeat, first in repeats:
            if first.error is not None:
                repeat.fail(first.error)
        if self._p.catalog.makes_blobs_durable:
            return  # the record's own sync covers these bytes and names too (SQLiteCatalog)
        if any(e.ok and (e.status == STORED or store.needs_flush(e.digest or "")) for e in ready):
            # One sync makes the bytes and the new names durable before the catalog points at them. A
            # crash before it ends can leave a name without its bytes, never a row: start-up after an
            # unclean stop hashes blobs without a row (rhinobox/runmarker.py, rhinobox/reconcile.py).
            await self._flush()

    def _drop_repeats(self, entries: list[FileEntry]) -> list[tuple[FileEntry, FileEntry]]:
        """Content repeated within the request: the first file stores it, later ones are duplicates.

        Decided here, in request order, so that parallel commits cannot make a later file `stored`.
        Returns (repeat, first) pairs: a repeat shares the fate of its first file.
        """
        first_of = self._first_of_digest
        repeats = []
        for entry in entries:
            if not entry.ok or entry.digest is None:
                continue
            first = first_of.setdefault(entry.digest, entry)
            if first is not entry and entry.spool_path is not None:
                remove_spool_file(entry.spool_path)
                entry.spool_path = None
                repeats.append((entry, first))
        return repeats

    async def _flush(self) -> None:
        """Wait for a store flush, turning an I/O failure into a storage error with a stable code."""
        try:
            await self._p.store.flush()
        except OSError as exc:
            raise storage_failure(exc, "make the files durable") from exc

    async def _record(self, entries: list[FileEntry]) -> None:
        now, hint, comment = time.time(), self.hint, self.comment
        records = [
            UploadRecord(
                digest=e.digest,
                size=e.size,
                mime=e.mime or "application/octet-stream",
                blob_category=e.blob_category or "other/octet-stream",
                category=upload_category(e.blob_category or "other/octet-stream", hint),
                name=e.name,
                hint=hint,
                comment=comment,
                claimed_type=e.claimed_type,
                uploaded_at=now,
            )
            for e in entries
            if e.ok and e.digest is not None
        ]
        try:
            await self._p.catalog.record_uploads(records)
        except sqlite3.Error as exc:
            if "full" in str(exc):
                raise InsufficientStorage("the catalog disk is full") from exc
            raise StorageError(f"could not record the uploads ({exc})") from exc

    async def _cleanup(self) -> None:
        """Release everything this request holds, whatever state it stopped in."""
        if not self._left:
            self._left = True
            self._p.singles.leave()
        outstanding = [f for f in self._threads if not f.done()]
        outstanding += [w for e in self._entries if e.writer is not None and (w := e.writer.outstanding) is not None]
        if outstanding:
            await asyncio.wait(outstanding)  # a thread may still use these files and arenas
        self._threads = []
        if self._arena is not None:
            self._p.arenas.release(self._arena)
            self._arena = None
        for entry in self._entries:
            if entry.writer is not None:
                writer, entry.writer = entry.writer, None
                await writer.abort()
            if entry.spool_path is not None:
                remove_spool_file(entry.spool_path)
                entry.spool_path = None
            if entry.pinned:
                assert entry.digest is not None
                self._p.pins.unpin(entry.digest)
                entry.pinned = False
