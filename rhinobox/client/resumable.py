"""Large files go resumably (tus 1.0 at `/uploads/`): a dropped connection or a restarted CLI costs at most
one chunk, not the whole file.

Upload URLs are remembered by file path and content hash in a small JSON file, so `rhinobox upload` run
again after a crash resumes where the server stands (`HEAD`) instead of starting over. A creation
carries the file's BLAKE3, so content the server already has completes without sending a byte.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

import aiohttp

from rhinobox.client.client import RETRYABLE_ERRORS, RhinoBoxClient, _Answer
from rhinobox.client.errors import ServerError
from rhinobox.client.models import FileResult
from rhinobox.client.uploads import LocalFile

__all__ = ["CHUNK_BYTES", "RESUMABLE_THRESHOLD", "ResumableSender", "UploadUrls", "default_state_file"]

RESUMABLE_THRESHOLD: Final = 64 * 1024 * 1024  # files this large or larger go by tus
CHUNK_BYTES: Final = 8 * 1024 * 1024  # one PATCH: what a drop can cost, and what is held in memory
MAX_RESUMES: Final = 20  # reconnects for one file before it is reported failed
TUS: Final = {"Tus-Resumable": "1.0.0"}
CONNECTION_FAILED: Final = "connection_failed"  # kept remembered: the next run resumes
RESUME_STATUSES: Final = frozenset({409, 423, 460, 500, 502, 503, 504})  # ask where the upload stands, go on
ByteProgress = Callable[[int], None]


def default_state_file() -> Path:
    """`$XDG_STATE_HOME/rhinobox/uploads.json` (default `~/.local/state/...`)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "rhinobox" / "uploads.json"


class UploadUrls:
    """Upload URLs by (server, absolute path, content hash): what lets a new run resume an old upload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _store(self, urls: dict[str, str]) -> None:
        with contextlib.suppress(OSError):  # remembering is a convenience: never fail an upload over it
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(urls, indent=0))
            os.replace(temporary, self.path)

    @staticmethod
    def key(server: str, path: Path, digest: str) -> str:
        return f"{server} {os.path.abspath(path)} {digest}"

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    def put(self, key: str, url: str) -> None:
        self._store({**self._load(), key: url})

    def forget(self, key: str) -> None:
        urls = self._load()
        if urls.pop(key, None) is not None:
            self._store(urls)


def _metadata(**values: str | None) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items() if v)


class ResumableSender:
    """Sends one file at a time through `client` with tus; returns the server's result for it."""

    def __init__(self, client: RhinoBoxClient, urls: UploadUrls, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.client = client
        self.urls = urls
        self.chunk_bytes = chunk_bytes

    async def send(
        self, file: LocalFile, size: int, *, category: str | None = None, on_sent: ByteProgress | None = None
    ) -> FileResult:
        """Create (or resume) the upload of `file` and send what the server lacks; raises `ServerError`."""
        assert file.digest is not None
        key = UploadUrls.key(self.client.base_url, file.path, file.digest)
        url = self.urls.get(key)
        offset = await self._offset(url) if url is not None else None
        if url is None or offset is None:
            url, offset, result = await self._create(file, size, category)
            if result is not None:
                return result
            self.urls.put(key, url)
        if on_sent is not None and offset:
            on_sent(offset)
        try:
            result = await self._send_from(url, file.path, offset, size, on_sent)
        except ServerError as exc:
            if exc.code != CONNECTION_FAILED:  # the upload cannot go on: the next run starts afresh
                self.urls.forget(key)
            raise
        self.urls.forget(key)
        return result

    async def _create(self, file: LocalFile, size: int, category: str | None) -> tuple[str, int, FileResult | None]:
        headers = {
            **TUS,
            "Upload-Length": str(size),
            "Upload-Metadata": _metadata(
                filename=file.name, filetype=file.content_type, category=category, blake3=file.digest
            ),
        }
        answer = await self.client._send("POST", "/uploads/", headers=headers, idempotent=False)
        self.client._raise_for(answer)
        url = answer.headers["Location"]
        return url, int(answer.headers.get("Upload-Offset", "0")), _result_of(answer.headers)

    async def _offset(self, url: str) -> int | None:
        """Where the upload stands, or None if the server no longer has it."""
        answer = await self.client._send("HEAD", url, headers=TUS)
        if answer.status != 200:
            return None
        return int(answer.headers["Upload-Offset"])

    async def _send_from(
        self, url: str, path: Path, offset: int, size: int, on_sent: ByteProgress | None
    ) -> FileResult:
        resumes = 0
        while True:
            if offset >= size:
                head = await self.client._send("HEAD", url, headers=TUS)
                self.client._raise_for(head)
                result = _result_of(head.headers)
                if result is not None:
                    return result
            chunk = await asyncio.to_thread(_read_chunk, path, offset, self.chunk_bytes)
            headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
            answer: _Answer | None
            try:
                answer = await self.client._send(
                    "PATCH", url, headers=headers, body=partial(_same, chunk), idempotent=False
                )
            except (aiohttp.ClientError, *RETRYABLE_ERRORS):
                answer = None
            if answer is not None and answer.status == 204:
                new_offset = int(answer.headers["Upload-Offset"])
                if on_sent is not None:
                    on_sent(new_offset - offset)
                offset = new_offset
                result = _result_of(answer.headers)
                if result is not None:
                    return result
                continue
            if answer is not None and answer.status not in RESUME_STATUSES:
                self.client._raise_for(answer)
            resumes += 1
            if resumes > MAX_RESUMES:
                if answer is not None:
                    self.client._raise_for(answer)
                raise ServerError(0, CONNECTION_FAILED, f"the upload of {path} kept failing; run again to resume")
            await asyncio.sleep(self.client.retry.delay(resumes))
            known = await self._offset(url)
            if known is None:
                raise ServerError(404, "upload_not_found", "the server no longer has this upload; run again")
            if on_sent is not None and known != offset:
                on_sent(known - offset)
            offset = known


def _same(chunk: bytes, _: object) -> bytes:
    return chunk


def _read_chunk(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _result_of(headers: Any) -> FileResult | None:
    raw = headers.get("RhinoBox-Result")
    return FileResult.from_json(json.loads(raw)) if raw else None
