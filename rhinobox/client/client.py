"""`RhinoBoxClient`: an async client for every RhinoBox endpoint, with retries and streaming bodies.

Requests that fail with 503 (the server's queue is full) or a connection error are retried with
exponential backoff, honouring `Retry-After`. Non-idempotent requests (`POST /ingest`, `DELETE`) are
retried only when they provably never reached the server (503, refused or timed-out connect): a
connection that breaks after sending may have been committed, so that error is raised instead of
recording the upload twice. Bodies are rebuilt for every attempt, re-opening the files they stream
from, so nothing is ever held whole in memory.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import blake3

from rhinobox.client.errors import RhinoBoxClientError, ServerError
from rhinobox.client.models import (
    FileMeta,
    FilePage,
    FileResult,
    IngestResult,
    JobEvent,
    JobRef,
    JobStatus,
    Stats,
    StoredFile,
)
from rhinobox.client.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from rhinobox.client.uploads import HASH_CHUNK, LocalFile, multipart_body

__all__ = ["DEFAULT_SERVER", "MISSING_BATCH", "RhinoBoxClient"]

DEFAULT_SERVER: Final = "http://127.0.0.1:8090"
MISSING_BATCH: Final = 10_000  # the most hashes `POST /blobs/missing` takes at once
DOWNLOAD_CHUNK: Final = 1024 * 1024
PART_SUFFIX: Final = ".part"
JOB_POLL_SECONDS: Final = 1.0
RETRYABLE_ERRORS: Final = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
# Errors raised before a byte of the request left: safe to retry even a non-idempotent request.
UNSENT_ERRORS: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT"})  # PUT /blobs/{hash} is keyed by content
SSE_MAX_LINE: Final = 64 * 1024 * 1024  # a job's `end` event carries every result on one line

BodyFactory = Callable[[ExitStack], Any]
ByteProgress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def _local(file: LocalFile | str | Path) -> LocalFile:
    return file if isinstance(file, LocalFile) else LocalFile.of(file)


class RhinoBoxClient:
    """Use as `async with RhinoBoxClient(url) as client:`; pass `session` to share a connection pool."""

    def __init__(
        self,
        base_url: str = DEFAULT_SERVER,
        *,
        token: str | None = None,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout or aiohttp.ClientTimeout(total=None, sock_connect=30)

    async def __aenter__(self) -> RhinoBoxClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            # aiohttp silently resends a DELETE once if the connection drops before the answer; after a
            # committed delete that turns success into not_found. Retries here follow `_send`'s rules only.
            # (A session passed in keeps aiohttp's behaviour: its owner's choice.)
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- the request loop ------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        json_body: Any = None,
        idempotent: bool | None = None,
    ) -> _Answer:
        """One request, retried on 503 and connection errors; returns the final answer whatever its status.

        `idempotent` defaults from the method; a non-idempotent request is retried only after errors
        that prove it was never sent (`UNSENT_ERRORS`), since any other may follow a server commit.
        """
        safe_to_resend = idempotent if idempotent is not None else method.upper() in IDEMPOTENT_METHODS
        retryable = RETRYABLE_ERRORS if safe_to_resend else UNSENT_ERRORS
        attempt = 0
        while True:
            attempt += 1
            try:
                with ExitStack() as stack:
                    data = body(stack) if body is not None else None
                    async with self.session.request(
                        method,
                        self.url(path),
                        params=params,
                        headers={**self._headers, **(headers or {})},
                        data=data,
                        json=json_body,
                    ) as response:
                        payload = await response.read()
                        answer = _Answer(response.status, response.headers, payload)
            except retryable:
                if attempt >= self.retry.attempts:
                    raise
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            if answer.status in RETRY_STATUSES and attempt < self.retry.attempts:
                wait = parse_retry_after(answer.headers.get("Retry-After"), time.time())
                await asyncio.sleep(self.retry.delay(attempt, wait))
                continue
            return answer

    @staticmethod
    def _raise_for(answer: _Answer) -> None:
        if answer.status < 400:
            return
        try:
            error = (answer.json() or {}).get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        code = str(error.get("code") or f"http_{answer.status}")
        message = str(error.get("message") or answer.body[:200].decode("utf-8", errors="replace"))
        raise ServerError(answer.status, code, message)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = await self._send(method, path, **kwargs)
        self._raise_for(answer)
        return answer.json()

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """`GET /healthz` (answers 503 with the same shape when unhealthy: no exception then)."""
        answer = await self._send("GET", "/healthz")
        data: dict[str, Any] = answer.json()
        return data

    # -- ingest ----------------------------------------------------------------------------

    def _ingest_body(
        self,
        files: Sequence[LocalFile | str | Path],
        category: str | None,
        comment: str | None,
        on_read: ByteProgress | None,
    ) -> BodyFactory:
        locals_ = [_local(f) for f in files]
        fields = {k: v for k, v in (("category", category), ("comment", comment)) if v}
        counter = _AttemptCounter(on_read) if on_read is not None else None
        return lambda stack: multipart_body(
            locals_, fields, stack, on_read=counter.next_attempt() if counter is not None else None
        )

    async def ingest(
        self,
        files: Sequence[LocalFile | str | Path],
        *,
        category: str | None = None,
        comment: str | None = None,
        on_read: ByteProgress | None = None,
    ) -> IngestResult:
        """`POST /ingest`: one result per file, in order. Per-file failures are results, not exceptions.

        `on_read(n)` is called (from a worker thread) as file bytes are read for sending; before a
        retry it is called once with minus the bytes of the failed attempt, so the running sum is
        never more than the batch's size.
        """
        if not files:
            raise RhinoBoxClientError("ingest needs at least one file")
        answer = await self._send("POST", "/ingest", body=self._ingest_body(files, category, comment, on_read))
        data = _maybe_json(answer)
        if isinstance(data, dict) and "results" in data:
            return IngestResult.from_json(data, answer.status)
        self._raise_for(answer)
        raise RhinoBoxClientError(f"unexpected ingest answer ({answer.status})")

    async def ingest_async(
        self,
        files: Sequence[LocalFile | str | Path],
        *,
        category: str | None = None,
        comment: str | None = None,
        on_read: ByteProgress | None = None,
    ) -> JobRef:
        """`POST /ingest?async=true`: the server spools the files and answers with a job to follow."""
        answer = await self._send(
            "POST", "/ingest", params={"async": "true"}, body=self._ingest_body(files, category, comment, on_read)
        )
        self._raise_for(answer)
        return JobRef.from_json(answer.json())

    # -- jobs ------------------------------------------------------------------------------

    async def job(self, job_id: str) -> JobStatus:
        """`GET /jobs/{id}`."""
        return JobStatus.from_json(await self._json("GET", f"/jobs/{job_id}"))

    async def job_events(self, job_id: str) -> AsyncIterator[JobEvent]:
        """`GET /jobs/{id}/events`: `state` first, a `progress` per file, `end` last (the stream ends then)."""
        async with self.session.get(self.url(f"/jobs/{job_id}/events"), headers=self._headers) as response:
            if response.status >= 400:
                self._raise_for(_Answer(response.status, response.headers, await response.read()))
            async for kind, data in _sse(response.content):
                yield JobEvent.from_json(kind, data)

    async def wait_for_job(self, job_id: str, on_event: Callable[[JobEvent], None] | None = None) -> JobStatus:
        """Follow the job's events until it ends; if the stream breaks, poll (with retries) instead."""
        try:
            async for event in self.job_events(job_id):
                if on_event is not None:
                    on_event(event)
                if event.kind == "end":
                    return event.status
        except RETRYABLE_ERRORS:
            pass
        while True:
            status = await self.job(job_id)
            if status.final:
                return status
            await asyncio.sleep(JOB_POLL_SECONDS)

    # -- dedup-aware upload ----------------------------------------------------------------

    async def missing(self, hashes: Iterable[str]) -> list[str]:
        """`POST /blobs/missing`: which of `hashes` the server does not hold, in the order given."""
        wanted = list(hashes)
        missing: list[str] = []
        for start in range(0, len(wanted), MISSING_BATCH):
            data = await self._json(
                "POST", "/blobs/missing", json_body={"hashes": wanted[start : start + MISSING_BATCH]}
            )
            missing.extend(data["missing"])
        return missing

    async def put_blob(
        self, file: LocalFile | str | Path, *, digest: str | None = None, send_body: bool = True
    ) -> FileResult:
        """`PUT /blobs/{hash}` with the file's raw bytes (hashed here first if `digest` is not given).

        With `send_body=False` the body is empty: for content the server already holds, this records
        the upload (a duplicate) without sending the bytes again.
        """
        local = _local(file)
        digest = digest or local.digest or await asyncio.to_thread(_hash, local.path)
        headers = {"X-Filename": _header_safe(local.name), "Content-Type": local.content_type}

        def body(stack: ExitStack) -> Any:
            return stack.enter_context(local.path.open("rb")) if send_body else b""

        answer = await self._send("PUT", f"/blobs/{digest}", headers=headers, body=body)
        data = _maybe_json(answer)
        if isinstance(data, dict) and "status" in data and "error" not in data:
            return FileResult.from_json({"index": 0, "name": local.name, **data})
        self._raise_for(answer)
        raise RhinoBoxClientError(f"unexpected answer to PUT /blobs ({answer.status})")

    # -- files -----------------------------------------------------------------------------

    async def download(
        self, digest: str, dest: str | Path, *, resume: bool = True, on_bytes: ByteProgress | None = None
    ) -> Path:
        """Download a blob to `dest`, resuming from `dest.part` with a Range request; verified by hash."""
        dest = Path(dest)
        part = dest.with_name(dest.name + PART_SUFFIX)
        if not resume:
            part.unlink(missing_ok=True)
        attempt = 0
        while True:
            attempt += 1
            try:
                finished = await self._download_once(digest, part, on_bytes)
            except RETRYABLE_ERRORS:
                if attempt >= self.retry.attempts:
                    raise
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            if finished:
                break
            if attempt >= self.retry.attempts:
                raise RhinoBoxClientError(f"download of {digest} kept failing (server busy)")
            await asyncio.sleep(self.retry.delay(attempt))
        actual = await asyncio.to_thread(_hash, part)
        if actual != digest:
            part.unlink(missing_ok=True)
            raise RhinoBoxClientError(f"downloaded bytes hash to {actual}, not {digest}; partial file removed")
        part.replace(dest)
        return dest

    async def _download_once(self, digest: str, part: Path, on_bytes: ByteProgress | None) -> bool:
        """One GET into `part` (ranged if it holds bytes already); False when the server asks to retry."""
        have = await asyncio.to_thread(_size_or_zero, part)
        headers = dict(self._headers)
        if have:
            headers.update({"Range": f"bytes={have}-", "If-Range": f'"{digest}"'})
        async with self.session.get(self.url(f"/files/{digest}"), headers=headers) as response:
            if response.status == 416 and have:
                return True  # the part file already holds every byte; the hash check decides
            if response.status in RETRY_STATUSES:
                return False
            if response.status not in (200, 206):
                self._raise_for(_Answer(response.status, response.headers, await response.read()))
            mode = "ab" if response.status == 206 else "wb"
            with part.open(mode) as out:
                if on_bytes is not None and have and response.status == 206:
                    on_bytes(have)
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    await asyncio.to_thread(out.write, chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        return True

    async def list_files(
        self,
        *,
        category: str | None = None,
        mime: str | None = None,
        name: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        since: str | float | None = None,
        until: str | float | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> FilePage:
        """`GET /files`: newest first, filtered; `since`/`until` are epoch seconds or ISO 8601."""
        given = {
            "category": category,
            "mime": mime,
            "name": name,
            "min_size": min_size,
            "max_size": max_size,
            "since": since,
            "until": until,
            "limit": limit,
            "cursor": cursor,
        }
        params = {key: str(value) for key, value in given.items() if value is not None}
        return FilePage.from_json(await self._json("GET", "/files", params=params))

    async def iter_files(self, **filters: Any) -> AsyncIterator[StoredFile]:
        """Every file `list_files(**filters)` matches, following the cursor page by page."""
        cursor: str | None = None
        while True:
            page = await self.list_files(**filters, cursor=cursor)
            for file in page.files:
                yield file
            if page.next is None:
                return
            cursor = page.next

    async def meta(self, digest: str, *, limit: int | None = None, cursor: str | None = None) -> FileMeta:
        """`GET /files/{hash}/meta`: the blob and a page of its upload records."""
        params = {k: str(v) for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        return FileMeta.from_json(await self._json("GET", f"/files/{digest}/meta", params=params))

    async def delete(self, digest: str) -> None:
        """`DELETE /files/{hash}`."""
        await self._json("DELETE", f"/files/{digest}")

    async def stats(self) -> Stats:
        """`GET /stats`."""
        return Stats.from_json(await self._json("GET", "/stats"))


def _maybe_json(answer: _Answer) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _header_safe(name: str) -> str:
    """`X-Filename`: percent-encoded UTF-8, which the server decodes (so `%` itself is encoded too)."""
    return quote(name, safe=" !#$&'()+,;=@[]^`{}~")


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _hash(path: Path) -> str:
    hasher = blake3.blake3()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


class _AttemptCounter:
    """Forwards read progress and, when a retry rebuilds the body, takes back what the last attempt counted."""

    def __init__(self, on_read: ByteProgress) -> None:
        self._on_read = on_read
        self._lock = threading.Lock()
        self._attempt = 0
        self._counted = 0

    def next_attempt(self) -> ByteProgress:
        with self._lock:
            self._attempt += 1
            attempt, taken_back, self._counted = self._attempt, self._counted, 0
        if taken_back:
            self._on_read(-taken_back)

        def on_read(size: int) -> None:
            with self._lock:
                if attempt != self._attempt:
                    return  # a late read of an abandoned attempt (aiohttp reads files on a thread)
                self._counted += size
            self._on_read(size)

        return on_read


async def _sse(content: aiohttp.StreamReader, max_line: int = SSE_MAX_LINE) -> AsyncIterator[tuple[str, Any]]:
    """(event, parsed data) pairs from a text/event-stream body; comments and ids are skipped.

    Lines are split here rather than with `StreamReader.readline`, whose limit (a few hundred KiB)
    a large job's `end` event exceeds.
    """
    kind, data = "message", list[str]()
    async for line in _lines(content, max_line):
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


async def _lines(content: aiohttp.StreamReader, max_line: int) -> AsyncIterator[str]:
    """Decoded lines without their `\\n` / `\\r\\n`; a line longer than `max_line` bytes is an error."""
    buffer = bytearray()
    async for chunk in content.iter_any():
        buffer += chunk
        if b"\n" in chunk:
            *complete, rest = bytes(buffer).split(b"\n")
            buffer = bytearray(rest)
            for raw in complete:
                _check_line(len(raw), max_line)
                yield raw.decode("utf-8").removesuffix("\r")
        _check_line(len(buffer), max_line)
    if buffer:
        yield bytes(buffer).decode("utf-8").removesuffix("\r")


def _check_line(size: int, max_line: int) -> None:
    if size > max_line:
        raise RhinoBoxClientError(f"event stream line longer than {max_line} bytes")
