"""Resumable uploads (tus 1.0 and the IETF draft share this): create, append, complete, terminate, expire.

The protocol modules only parse headers and call these. An upload's bytes go to its partial file as
they arrive and are hashed in order; when the last byte is there the file takes the same commit path
as every other door (`finish_spooled`). A creation that names content the store already has is
complete at once, without bytes. See `upload_records` for what is on disk and `upload_holds` for
how two requests for one upload are kept apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from rhinobox.errors import (
    ChecksumMismatch,
    EmptyFile,
    InvalidUploadHeader,
    RhinoBoxError,
    TooManyOpenUploads,
    UploadFailed,
    UploadLocked,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooLong,
)
from rhinobox.ingest.blocks import BlockSpooler
from rhinobox.ingest.known import record_known
from rhinobox.ingest.resources import IngestResources
from rhinobox.ingest.upload_append import PartAppender, UploadProgress, new_checksum, truncate_part
from rhinobox.ingest.upload_complete import Describe, complete_upload, upload_entry, upload_meta
from rhinobox.ingest.upload_holds import UploadHold, UploadHolds
from rhinobox.ingest.upload_records import UploadDirectory, UploadRecord, UploadUsage, new_upload_id

__all__ = ["Checksum", "ResumableUploads", "UploadStatus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checksum:
    """A chunk's declared checksum (tus `Upload-Checksum`): hashlib algorithm name and digest bytes."""

    algorithm: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """Where one upload stands, as every response reports it."""

    record: UploadRecord
    offset: int
    expires: float

    @property
    def complete(self) -> bool:
        return self.record.result is not None


class ResumableUploads:
    """The uploads of one data directory; every method raises a `RhinoBoxError` the HTTP layer maps."""

    def __init__(
        self,
        resources: IngestResources,
        directory: UploadDirectory,
        *,
        expiry_seconds: float,
        max_open: int,
        describe: Describe,
    ) -> None:
        self._res = resources
        self.directory = directory
        self.expiry_seconds = expiry_seconds
        self.max_open = max_open
        self._describe = describe  # the JSON object of one ingested file, as ingest answers give it
        self._holds = UploadHolds()
        self._progress: dict[str, UploadProgress] = {}

    @property
    def max_length(self) -> int:
        return self._res.limits.max_upload_bytes

    # --- reading -------------------------------------------------------------------------------------

    def status(self, upload_id: str) -> UploadStatus:
        """The upload's state (blocking but short: a small file read and two stats)."""
        record = self.directory.load(upload_id)
        if record is None:
            raise UploadNotFound()
        last = self.directory.last_activity(upload_id)
        if time.time() - last > self.expiry_seconds and not self._holds.held(upload_id):
            raise UploadNotFound("the upload expired")
        if record.result is not None:
            offset = int(record.result["size"])
        else:
            offset = self.directory.received(upload_id)
            if record.unverified_from is not None and not self._holds.held(upload_id):
                offset = min(offset, record.unverified_from)
        return UploadStatus(record, offset, last + self.expiry_seconds)

    def usage(self) -> UploadUsage:
        return self.directory.usage()

    # --- creating ------------------------------------------------------------------------------------

    async def create(self, length: int | None, metadata: dict[str, str], expected_digest: str | None) -> UploadStatus:
        """A new upload of `length` bytes (None: declared later); complete at once if the store has the content."""
        if length == 0:
            raise EmptyFile("an upload must have at least one byte")
        self._check_length(length)
        record = UploadRecord(
            id=new_upload_id(), length=length, metadata=metadata, created=time.time(), expected_digest=expected_digest
        )
        if expected_digest is not None and length is not None:
            known = await self._record_known(record)
            if known is not None:
                return known
        self._res.check_free_space()
        if self.directory.usage().open_uploads >= self.max_open:
            raise TooManyOpenUploads(f"{self.max_open} uploads are open; finish or terminate some first")
        self.directory.create(record, with_part=True)
        return self.status(record.id)

    async def _record_known(self, record: UploadRecord) -> UploadStatus | None:
        entry = upload_entry(record)
        if not await record_known(self._res, entry, upload_meta(record.metadata), expected_size=record.length):
            return None
        record = record.with_changes(result=self._describe(entry, upload_meta(record.metadata)))
        self.directory.save(record)
        return self.status(record.id)

    def _check_length(self, length: int | None) -> None:
        if length is not None and length > self.max_length:
            raise UploadTooLong(f"uploads may be at most {self._res.limits.max_upload_mb} MiB")

    # --- appending -----------------------------------------------------------------------------------

    async def append(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        checksum: Checksum | None = None,
        length: int | None = None,
        completes: bool = False,
        body_size: int | None = None,
    ) -> UploadStatus:
        """Append one request's bytes at `offset`; `length` declares a deferred length, `completes` says the
        body ends the upload (the IETF draft's `Upload-Complete: ?1`), `body_size` is its Content-Length.
        Completes the upload when the last byte is in."""
        record = self._open_record(upload_id, offset)
        async with self._holds.hold(upload_id, self.directory.part_path(upload_id)) as hold:
            record = self._open_record(upload_id, offset)  # it may have changed while the last holder let go
            record = self._repair(record)
            received = self.directory.received(upload_id)
            if offset != received:
                raise UploadOffsetMismatch(received, offset)
            record = self._declare_length(record, length, received)
            progress = self._progress.setdefault(upload_id, UploadProgress())
            await self._res.pool.run_io(partial(progress.catch_up, self.directory.part_path(upload_id), received))
            room = (record.length if record.length is not None else self.max_length) - received
            if body_size is not None and body_size > room:
                raise UploadTooLong(f"the body goes past the upload's length ({room} more bytes fit)")
            written = await self._receive(record, hold, progress, received, room, body, checksum)
            if completes:
                record = self._declare_length(record, received + written, received + written)
            if record.length is not None and received + written == record.length:
                self._progress.pop(record.id, None)
                await complete_upload(self._res, self.directory, record, progress, self._describe)
            return self.status(upload_id)

    def _open_record(self, upload_id: str, offset: int) -> UploadRecord:
        """The record of an upload that still takes bytes."""
        record = self.status(upload_id).record
        if record.error is not None:
            raise UploadFailed(f"the upload failed: {record.error.get('message', '')}")
        if record.result is not None:  # complete: it takes no more bytes, at any offset
            raise UploadOffsetMismatch(int(record.result["size"]), offset)
        return record

    def _repair(self, record: UploadRecord) -> UploadRecord:
        """Drop the bytes of a checksummed chunk that was cut before it was verified."""
        if record.unverified_from is None:
            return record
        truncate_part(self.directory.part_path(record.id), record.unverified_from)
        self._progress.pop(record.id, None)
        record = record.with_changes(unverified_from=None)
        self.directory.save(record)
        return record

    def _declare_length(self, record: UploadRecord, length: int | None, received: int) -> UploadRecord:
        if length is None or length == record.length:
            return record
        if record.length is not None:
            raise InvalidUploadHeader(f"the upload's length is {record.length}; it cannot change to {length}")
        if length < received:
            raise InvalidUploadHeader(f"the length {length} is less than the {received} bytes already received")
        if length == 0:
            raise EmptyFile("an upload must have at least one byte")
        self._check_length(length)
        record = record.with_changes(length=length)
        self.directory.save(record)
        return record

    async def _receive(
        self,
        record: UploadRecord,
        hold: UploadHold,
        progress: UploadProgress,
        start: int,
        room: int,
        body: AsyncIterator[bytes],
        checksum: Checksum | None,
    ) -> int:
        """Stream the body to the partial file; returns the bytes kept. Interrupted: what arrived stays (unless
        it must pass a checksum first; synced first when durable), and the error is raised."""
        part_path = self.directory.part_path(record.id)
        if checksum is not None:
            self.directory.save(record.with_changes(unverified_from=start))
        appender = PartAppender(part_path, start, progress, new_checksum(checksum.algorithm) if checksum else None)
        spooler = BlockSpooler(self._res.pool, appender)
        keep = checksum is None  # an interrupted plain chunk keeps what arrived; a checksummed one cannot
        accepted = False
        try:
            await self._stream(hold, spooler, body, room)
            await spooler.drain()
            if checksum is not None:
                if not hmac.compare_digest(appender.checksum_digest(), checksum.digest):
                    raise ChecksumMismatch()
                await self._res.pool.run_io(partial(progress.catch_up, part_path, start + appender.written))
                self.directory.save(record)  # verified: its bytes count
            if self.directory.durable:
                await self._res.pool.run_io(appender.sync)
            accepted = True
            return appender.written
        except UploadTooLong:
            keep = False
            raise
        except asyncio.CancelledError:
            if not hold.interrupted:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise UploadLocked("a newer request for this upload took over") from None
        finally:
            try:
                if not accepted and keep:  # what arrived before the interruption is kept, as tus asks
                    await self._keep_arrived(spooler)
            finally:
                await spooler.abort()  # waits for a block in flight; the partial file stays
            if not accepted and not keep:
                self._discard_chunk(record, start, checksummed=checksum is not None)

    async def _keep_arrived(self, spooler: BlockSpooler[PartAppender]) -> None:
        """Write what an interrupted request brought and, when durable, sync it before the hold is let go (the
        next request or HEAD counts it); a failed sync cuts it back to where the request began, as for a PATCH."""
        with contextlib.suppress(RhinoBoxError, OSError):
            await spooler.drain()
        if not self.directory.durable:
            return
        try:
            await self._res.pool.run_io(spooler.writer.sync)
        except RhinoBoxError as exc:
            log.warning("the bytes kept from an interrupted upload request were cut back: %s", exc.message)

    async def _stream(
        self, hold: UploadHold, spooler: BlockSpooler[PartAppender], body: AsyncIterator[bytes], room: int
    ) -> None:
        size = 0
        chunks = aiter(body)
        while True:
            async with hold.reading_body():
                chunk = await anext(chunks, None)
            if chunk is None:
                return
            size += len(chunk)
            if size > room:
                raise UploadTooLong(f"the body goes past the upload's length ({room} more bytes fit)")
            await spooler.append(chunk)
            if hold.interrupted:
                raise UploadLocked("a newer request for this upload took over")

    def _discard_chunk(self, record: UploadRecord, start: int, *, checksummed: bool) -> None:
        """Cut the partial file back to where this request began: its bytes were not accepted."""
        truncate_part(self.directory.part_path(record.id), start)
        self._progress.pop(record.id, None)  # it may have hashed them: rebuilt from disk when needed
        if checksummed:
            self.directory.save(record)  # no longer an unverified chunk in flight

    # --- ending --------------------------------------------------------------------------------------

    async def terminate(self, upload_id: str) -> None:
        """Remove an upload at once (tus termination), interrupting a request that appends to it."""
        self.status(upload_id)  # 404 if unknown
        async with self._holds.hold(upload_id, self.directory.part_path(upload_id)):
            self.directory.remove(upload_id)
            self._progress.pop(upload_id, None)

    async def sweep(self) -> int:
        """Remove expired uploads and partial files without a record; returns how many went."""
        removed = 0
        now = time.time()
        for upload_id in [*self.directory.upload_ids(), *self.directory.orphan_parts()]:
            if self._holds.held(upload_id) or now - self.directory.last_activity(upload_id) <= self.expiry_seconds:
                continue
            with contextlib.suppress(UploadLocked):  # appended to by another process right now
                async with self._holds.hold(upload_id, self.directory.part_path(upload_id)):
                    self.directory.remove(upload_id)
                    self._progress.pop(upload_id, None)
                    removed += 1
        if removed:
            log.info("removed %d expired resumable upload(s)", removed)
        return removed

    async def sweep_forever(self, interval: float) -> None:
        """Sweep every `interval` seconds until cancelled; an error is logged, not fatal."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except (OSError, RhinoBoxError) as exc:
                log.warning("sweeping expired uploads failed: %s", exc)
