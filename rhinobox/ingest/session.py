"""One multipart request's lifetime: receive the body, prepare, commit and record, release everything.

The phases live in their own modules: `receive` (parts into arenas and spool files, hashed, pinned,
prepared on workers), `commit` (stored or duplicate, durability), `known` (content already stored).
Whatever happens, the session leaves no spool file behind and releases every arena and pin, and it
never abandons work it handed to a thread: cleanup waits for the thread before touching its files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from rhinobox.errors import NoFiles
from rhinobox.ingest.commit import RequestCommit, record_files
from rhinobox.ingest.delete import remove_unrecorded
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.known import type_known_content
from rhinobox.ingest.receive import MultipartReceiver
from rhinobox.ingest.report import IngestReport, UploadMeta
from rhinobox.ingest.resources import IngestResources
from rhinobox.ingest.threads import HandedWork

__all__ = ["IngestSession", "Progress"]

Progress = Callable[[FileEntry], None]


class IngestSession:
    """Per-request state: `receive` the body, then `complete` it (or `run` for both)."""

    def __init__(self, resources: IngestResources) -> None:
        self._res = resources
        self._work = HandedWork()
        self._receiver = MultipartReceiver(resources, self._work)
        self._left = False
        resources.singles.enter()

    @property
    def meta(self) -> UploadMeta:
        """The hint and comment the request carried (valid once received)."""
        return self._receiver.meta

    async def run(self, boundary: bytes, body: AsyncIterator[bytes]) -> IngestReport:
        """Receive the whole body, then store and record every file; the synchronous endpoint."""
        await self.receive(boundary, body)
        return await self.complete()

    async def receive(self, boundary: bytes, body: AsyncIterator[bytes]) -> int:
        """Stream the body off the socket; every file is then buffered or spooled. Returns the file count.

        On failure everything is released and the error propagates; on success call `complete`.
        """
        try:
            await self._receiver.stream(boundary, body)
            if not self._receiver.entries:
                raise NoFiles()
        except BaseException:
            await self._cleanup()
            raise
        return len(self._receiver.entries)

    async def complete(self, progress: Progress | None = None, chunk_files: int | None = None) -> IngestReport:
        """Prepare, commit and record the received files; the results keep the request's order.

        With `progress`, files are committed and recorded `chunk_files` at a time and `progress` is
        called with each file once its result is final (async jobs report live progress this way).
        """
        entries, meta = self._receiver.entries, self.meta
        recorded = False
        try:
            await self._receiver.finish_preparing()
            await type_known_content(self._res, entries)
            committer = RequestCommit(self._res, self._work)
            step = chunk_files if progress is not None and chunk_files else len(entries)
            for start in range(0, len(entries), step):
                chunk = entries[start : start + step]
                await committer.commit(chunk)
                await record_files(self._res, chunk, meta)
                if progress is not None:
                    for entry in chunk:
                        progress(entry)
            recorded = True
            return IngestReport(entries, meta)
        finally:
            await self._cleanup()
            if not recorded:
                await remove_unrecorded(self._res, entries)

    async def _cleanup(self) -> None:
        """Release everything this request holds, whatever state it stopped in."""
        if not self._left:
            self._left = True
            self._res.singles.leave()
        await self._work.settle(also=self._receiver.writes_in_flight())  # a thread may still use these files
        await self._receiver.release()
