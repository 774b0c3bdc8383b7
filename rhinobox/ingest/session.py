"""One request's trip through the pipeline: stream parts off the socket, prepare, commit, record.

Small files are packed into pooled arenas, hashed on the loop (microseconds for a few KiB), pinned,
and handed to the worker pool an arena at a time. Large files stream to a spool file through a
worker. A request with one small file never leaves the event loop thread (the fast path).
Whatever happens, `run` leaves no spool file behind and releases every arena and pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Final

import blake3

from rhinobox.catalog.base import UploadRecord
from rhinobox.errors import (
    EmptyFile,
    FieldTooLarge,
    FileTooLarge,
    NoFiles,
    RhinoBoxError,
    StorageError,
    TooManyFiles,
)
from rhinobox.ingest.buffers import Arena
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.multipart import PART_DATA, PART_END, PART_START, MultipartStream, PartHeaders
from rhinobox.ingest.names import clean_filename, clean_hint, extension_of
from rhinobox.ingest.sniff import SNIFF_BYTES
from rhinobox.ingest.spool import SpoolWriter
from rhinobox.ingest.stages import commit_entries, prepare_in_memory, prepare_spooled

if TYPE_CHECKING:
    from rhinobox.ingest.pipeline import IngestPipeline

__all__ = ["IngestReport", "IngestSession", "Progress"]

SMALL_FILE_MAX: Final = 256 * 1024  # larger files stream to a spool file instead of an arena
ARENA_MAX_FILES: Final = 64  # files handed to a worker in one task
WRITE_BLOCK: Final = 1024 * 1024  # large files are hashed and written in blocks this big
COMMIT_CHUNK: Final = 256
MAX_FIELD_BYTES: Final = 64 * 1024
HINT_FIELD: Final = "category"
COMMENT_FIELD: Final = "comment"


Progress = Callable[[FileEntry], None]


class IngestReport:
    """The outcome of one request: every file part in order, and the form's text fields."""

    def __init__(self, entries: list[FileEntry], hint: str | None, comment: str | None) -> None:
        self.entries = entries
        self.hint = hint
        self.comment = comment

    def category_of(self, entry: FileEntry) -> str | None:
        if entry.blob_category is None:
            return None
        return f"{entry.blob_category}/{self.hint}" if self.hint else entry.blob_category


class _Part:
    """The part being streamed: a text field (bytes) or a file entry."""

    __slots__ = ("entry", "field", "text")

    def __init__(self, field: str, entry: FileEntry | None) -> None:
        self.field = field
        self.entry = entry
        self.text = bytearray()


class IngestSession:
    """Per-request state; create one per request and call `run` once."""

    def __init__(self, pipeline: IngestPipeline) -> None:
        self._p = pipeline
        self._entries: list[FileEntry] = []
        self._fields: dict[str, str] = {}
        self._part: _Part | None = None
        self._arena: Arena | None = None
        self._arena_entries: list[FileEntry] = []
        self._tasks: list[asyncio.Future[None]] = []
        self._pending_block: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._write: asyncio.Future[None] | None = None
        self._dispatched = False

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
            if progress is None:
                await self._commit(self._entries)
                await self._record(self._entries)
            else:
                step = chunk_files or len(self._entries)
                for start in range(0, len(self._entries), step):
                    chunk = self._entries[start : start + step]
                    await self._commit(chunk)
                    await self._record(chunk)
                    for entry in chunk:
                        progress(entry)
            return IngestReport(self._entries, self._hint(), self._fields.get(COMMENT_FIELD))
        finally:
            await self._cleanup()

    @property
    def hint(self) -> str | None:
        return self._hint()

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
            self._part = _Part(headers.field, None)
            return
        name = clean_filename(headers.filename)
        entry = FileEntry(
            index=len(self._entries),
            name=name,
            extension=extension_of(name),
            claimed_type=headers.content_type,
            expected_digest=self._p.expected_digest(headers, self._fields),
        )
        if len(self._entries) >= self._p.settings.max_files_per_request:
            entry.fail(TooManyFiles(f"at most {self._p.settings.max_files_per_request} files per request"))
        self._entries.append(entry)
        self._part = _Part(headers.field, entry)

    async def _on_data(self, data: memoryview) -> None:
        part = self._part
        assert part is not None
        entry = part.entry
        if entry is None:
            if len(part.text) + len(data) > MAX_FIELD_BYTES:
                raise FieldTooLarge(f"text field {part.field!r} is over {MAX_FIELD_BYTES} bytes")
            part.text += data
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

    async def _on_end(self) -> None:
        part, self._part = self._part, None
        assert part is not None
        if part.entry is None:
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
        entry.digest = blake3.blake3(entry.arena.view[entry.offset : entry.offset + entry.size]).hexdigest()
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
            with contextlib.suppress(RhinoBoxError, OSError):
                await self._await_write()
            entry.writer.abort()
            entry.writer = None
            self._pending_block.clear()
            self._pending_bytes = 0
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
        work = partial(prepare_in_memory, self._p.stage_context, entries)
        task = asyncio.ensure_future(self._p.pool.run(len(entries), work))
        task.add_done_callback(lambda _: self._p.arenas.release(arena))
        self._tasks.append(task)

    # -- large files -----------------------------------------------------------------------

    async def _spill_to_spool(self, entry: FileEntry, data: memoryview) -> None:
        writer = SpoolWriter(self._p.store.spool_dir)
        entry.writer = writer
        if entry.arena is not None:
            self._pending_block.append(bytes(entry.arena.view[entry.offset : entry.arena.used]))
            self._pending_bytes += len(self._pending_block[0])
            self._rewind_arena(entry)
            entry.arena = None
        await self._write_block(entry, data)

    async def _write_block(self, entry: FileEntry, data: memoryview) -> None:
        self._pending_block.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= WRITE_BLOCK:
            await self._flush_block(entry)

    async def _flush_block(self, entry: FileEntry) -> None:
        """Write the pending block on a worker, overlapping it with reading the next one."""
        block = b"".join(self._pending_block)
        self._pending_block, self._pending_bytes = [], 0
        try:
            await self._await_write()
        except RhinoBoxError as exc:
            await self._drop_bytes(entry)
            entry.fail(exc)
            return
        writer = entry.writer
        assert writer is not None
        self._write = asyncio.ensure_future(self._p.pool.run_io(partial(writer.write, block)))

    async def _await_write(self) -> None:
        """Wait for the outstanding block write, if any; its error (if any) is raised here."""
        write, self._write = self._write, None
        if write is not None:
            await write

    async def _finish_spool(self, entry: FileEntry) -> None:
        if self._pending_block:
            await self._flush_block(entry)
        try:
            await self._await_write()
        except RhinoBoxError as exc:
            await self._drop_bytes(entry)
            entry.fail(exc)
        writer = entry.writer
        if writer is None or not entry.ok:
            return
        entry.digest = writer.finish()
        entry.spool_path, entry.writer = writer.path, None
        if not self._verify_expected(entry):
            return
        await self._pin(entry)
        try:
            prepare_spooled(self._p.stage_context, entry, writer.head[:SNIFF_BYTES])
        except OSError as exc:
            entry.fail(StorageError(f"could not read the spooled file ({exc.strerror})"))

    # -- checks, pins ----------------------------------------------------------------------

    def _verify_expected(self, entry: FileEntry) -> bool:
        if entry.expected_digest is None or entry.expected_digest == entry.digest:
            return True
        entry.fail(self._p.digest_mismatch(entry))
        if entry.spool_path is not None:
            entry.spool_path.unlink(missing_ok=True)
            entry.spool_path = None
        return False

    async def _pin(self, entry: FileEntry) -> None:
        assert entry.digest is not None
        await self._p.pins.pin(entry.digest)
        entry.pinned = True

    # -- after the body --------------------------------------------------------------------

    async def _prepare_rest(self) -> None:
        if not self._dispatched and len(self._arena_entries) == 1 and len(self._entries) == 1:
            # The fast path: one small file, prepared inline on the loop (no thread hop).
            prepare_in_memory(self._p.stage_context, self._arena_entries)
            self._arena_entries = []
        else:
            await self._dispatch_arena()
        if self._tasks:
            await asyncio.gather(*self._tasks)
            self._tasks.clear()

    async def _commit(self, entries: list[FileEntry]) -> None:
        spooled = [e for e in entries if e.ok and e.spool_path is not None]
        if spooled:
            await self._p.store.flush()  # the bytes are durable before any name points at them
        ready = [e for e in entries if e.ok and e.digest is not None]
        if len(ready) <= 1:
            commit_entries(self._p.store, ready)
        else:
            await asyncio.gather(
                *(
                    self._p.pool.run(len(chunk), partial(commit_entries, self._p.store, chunk))
                    for chunk in (ready[i : i + COMMIT_CHUNK] for i in range(0, len(ready), COMMIT_CHUNK))
                )
            )
        store = self._p.store
        if any(e.ok and (e.status == "stored" or store.needs_flush(e.digest or "")) for e in ready):
            await store.flush()  # the new names are durable before the catalog points at them

    async def _record(self, entries: list[FileEntry]) -> None:
        now = time.time()
        hint, comment = self._hint(), self._fields.get(COMMENT_FIELD)
        records = [
            UploadRecord(
                digest=e.digest,
                size=e.size,
                mime=e.mime or "application/octet-stream",
                blob_category=e.blob_category or "other/octet-stream",
                category=f"{e.blob_category}/{hint}" if hint else (e.blob_category or "other/octet-stream"),
                name=e.name,
                hint=hint,
                comment=comment,
                claimed_type=e.claimed_type,
                uploaded_at=now,
            )
            for e in entries
            if e.ok and e.digest is not None
        ]
        await self._p.catalog.record_uploads(records)

    def _hint(self) -> str | None:
        raw = self._fields.get(HINT_FIELD)
        return clean_hint(raw) if raw else None

    async def _cleanup(self) -> None:
        """Release everything this request holds, whatever state it stopped in."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._write is not None:
            await asyncio.gather(self._write, return_exceptions=True)
        if self._arena is not None:
            self._p.arenas.release(self._arena)
            self._arena = None
        for entry in self._entries:
            if entry.writer is not None:
                entry.writer.abort()
                entry.writer = None
            if entry.spool_path is not None:
                entry.spool_path.unlink(missing_ok=True)
                entry.spool_path = None
            if entry.pinned:
                assert entry.digest is not None
                self._p.pins.unpin(entry.digest)
                entry.pinned = False
