"""Receiving a multipart body: each part becomes a text field or a `FileEntry` whose bytes sit somewhere safe.

Small files are packed into pooled arenas, hashed on the loop (microseconds for a few KiB), pinned,
and handed to the worker pool an arena at a time for preparation. Large files stream to a spool file
through a worker and are prepared as soon as their last byte is written. Limits hold while streaming.
`MultipartReceiver.release` frees whatever it holds, in any state; the caller first waits for threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from functools import partial
from typing import Final

from rhinobox.errors import (
    EmptyFile,
    FieldTooLarge,
    FileTooLarge,
    RhinoBoxError,
    StorageError,
    TooManyFiles,
    storage_failure,
)
from rhinobox.ingest.blocks import BlockSpooler
from rhinobox.ingest.buffers import Arena
from rhinobox.ingest.digests import DIGEST_FIELD_SUFFIX, digest_mismatch, expected_digest
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.loophash import digest_keeping_gil
from rhinobox.ingest.multipart import PART_DATA, PART_END, PART_START, MultipartStream, PartHeaders
from rhinobox.ingest.names import clean_filename, clean_hint, extension_of
from rhinobox.ingest.report import UploadMeta
from rhinobox.ingest.resources import IngestResources
from rhinobox.ingest.spool import remove_spool_file
from rhinobox.ingest.stages import prepare_in_memory, prepare_spooled
from rhinobox.ingest.threads import HandedWork

__all__ = [
    "ARENA_MAX_FILES",
    "COMMENT_FIELD",
    "HINT_FIELD",
    "MAX_EXTRA_PARTS",
    "MAX_FIELDS_TOTAL_BYTES",
    "MAX_FIELD_BYTES",
    "SMALL_FILE_MAX",
    "MultipartReceiver",
]

SMALL_FILE_MAX: Final = 128 * 1024  # larger files stream to a spool file instead of an arena
ARENA_MAX_FILES: Final = 64  # files handed to a worker in one task
MAX_FIELD_BYTES: Final = 64 * 1024  # one text field
MAX_FIELDS_TOTAL_BYTES: Final = 1024 * 1024  # all text fields of a request, kept or not
MAX_EXTRA_PARTS: Final = 1000  # parts past the file limit answered one by one; more fail the request
HINT_FIELD: Final = "category"
COMMENT_FIELD: Final = "comment"


class _Part:
    """The part being streamed: a text field (bytes, kept only for the fields ingest uses) or a file."""

    __slots__ = ("entry", "field", "keep", "text")

    def __init__(self, field: str, entry: FileEntry | None) -> None:
        self.field = field
        self.entry = entry
        self.keep = entry is None and (field in (HINT_FIELD, COMMENT_FIELD) or field.endswith(DIGEST_FIELD_SUFFIX))
        self.text = bytearray()


class MultipartReceiver:
    """Streams one request's parts into entries (hashed, pinned, and prepared or handed to a worker)."""

    def __init__(self, resources: IngestResources, work: HandedWork) -> None:
        self._res = resources
        self._work = work
        self.entries: list[FileEntry] = []
        self._fields: dict[str, str] = {}
        self._field_bytes = 0
        self._part: _Part | None = None
        self._arena: Arena | None = None
        self._arena_entries: list[FileEntry] = []
        self._dispatched = False
        self._spool_lane = threading.Lock()  # this request's small-file spool writes, one worker at a time

    @property
    def meta(self) -> UploadMeta:
        """The hint and comment the form carried (valid once the body is received)."""
        raw_hint = self._fields.get(HINT_FIELD)
        return UploadMeta(hint=clean_hint(raw_hint) if raw_hint else None, comment=self._fields.get(COMMENT_FIELD))

    async def stream(self, boundary: bytes, body: AsyncIterator[bytes]) -> None:
        """Take every part of the body; file bytes end up in arenas or spool files."""
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

    async def finish_preparing(self) -> None:
        """Prepare what is still in the current arena and wait for every file's preparation.

        A request with one small file is prepared on the loop, or with the other single-file requests
        of this moment in one shared worker task under load (the fast path).
        """
        if (
            self._res.store.inline_io
            and not self._dispatched
            and len(self._arena_entries) == 1
            and len(self.entries) == 1
        ):
            shared = self._res.singles.prepare(self._arena_entries[0])
            self._arena_entries = []
            if shared is not None:
                self._work.add(shared)
            await self._work.wait()
            if self._arena is not None:  # only now: a shared worker task may have been reading it
                self._res.arenas.release(self._arena)
                self._arena = None
            return
        await self._dispatch_arena()
        await self._work.wait()

    def writes_in_flight(self) -> list[asyncio.Future[None]]:
        """Spool writes still running on a worker (cleanup waits for them before removing files)."""
        return [w for e in self.entries if e.writer is not None and (w := e.writer.outstanding) is not None]

    async def release(self) -> None:
        """Give back the arena, abort spool writers, remove spool files, unpin hashes; call after threads ended."""
        if self._arena is not None:
            self._res.arenas.release(self._arena)
            self._arena = None
        for entry in self.entries:
            if entry.writer is not None:
                writer, entry.writer = entry.writer, None
                await writer.abort()
            if entry.spool_path is not None:
                remove_spool_file(entry.spool_path)
                entry.spool_path = None
            if entry.pinned:
                assert entry.digest is not None
                self._res.pins.unpin(entry.digest)
                entry.pinned = False

    # -- parts -----------------------------------------------------------------------------

    def _on_start(self, headers: PartHeaders) -> None:
        if headers.filename is None:
            part = self._part = _Part(headers.field, None)
            if part.keep:  # a kept field's name is held until the request ends: it counts too
                self._charge_field_bytes(len(headers.field))
            return
        name = clean_filename(headers.filename)
        entry = FileEntry(
            index=len(self.entries),
            name=name,
            extension=extension_of(name),
            claimed_type=headers.content_type,
            expected_digest=expected_digest(headers, self._fields),
        )
        self._fields.pop(headers.field + DIGEST_FIELD_SUFFIX, None)  # a declared digest is for one file
        limit = self._res.limits.max_files_per_request
        if len(self.entries) >= limit:
            if len(self.entries) >= limit + MAX_EXTRA_PARTS:
                raise TooManyFiles(f"at most {limit} files per request")
            entry.fail(TooManyFiles(f"at most {limit} files per request"))
        self.entries.append(entry)
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
        limits = self._res.limits
        if entry.size > limits.max_upload_bytes:
            await self._drop_bytes(entry)
            entry.fail(FileTooLarge(f"files may be at most {limits.max_upload_mb} MiB"))
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
                self._arena = await self._res.arenas.acquire()
            entry.arena, entry.offset = self._arena, self._arena.used
        elif entry.arena.free < len(data):
            # The file outgrew what is left of this arena: move its bytes to a fresh one.
            so_far = bytes(entry.arena.view[entry.offset : entry.arena.used])
            self._rewind_arena(entry)
            await self._dispatch_arena()
            self._arena = await self._res.arenas.acquire()
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
        pool, arenas = self._res.pool, self._res.arenas
        if not entries:
            arenas.release(arena)
            return
        self._dispatched = True
        work = partial(prepare_in_memory, self._res.stages, entries, defer_known=True, spool_lane=self._spool_lane)
        try:
            reserved = await pool.reserve(len(entries))
        except BaseException:
            arenas.release(arena)
            raise
        self._work.add(pool.submit(reserved, work, on_done=partial(arenas.release, arena)))

    # -- large files -----------------------------------------------------------------------

    async def _spill_to_spool(self, entry: FileEntry, data: memoryview) -> None:
        try:
            spooler = BlockSpooler(self._res.pool, self._res.new_spool_writer())
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
            await spooler.drain()
            entry.digest = spooler.writer.finish()
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
        prepare = partial(prepare_spooled, self._res.stages, entry, spooler.writer.scan)
        try:
            if self._res.store.inline_io:
                prepare()
            else:
                future = self._res.pool.submit_io(prepare)
                self._work.add(future)
                await asyncio.shield(future)
        except OSError as exc:
            entry.fail(StorageError(f"could not read the spooled file ({exc.strerror})"))

    # -- checks, pins ----------------------------------------------------------------------

    def _verify_expected(self, entry: FileEntry) -> bool:
        if entry.expected_digest is None or entry.expected_digest == entry.digest:
            return True
        entry.fail(digest_mismatch(entry))
        if entry.spool_path is not None:
            remove_spool_file(entry.spool_path)
            entry.spool_path = None
        return False

    async def _pin(self, entry: FileEntry) -> None:
        assert entry.digest is not None
        await self._res.pins.pin(entry.digest)
        entry.pinned = True
