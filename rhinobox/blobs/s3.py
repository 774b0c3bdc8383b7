"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, SeaweedFS, Swift s3api), via obstore.

Uploads are still spooled and hashed on local disk (`<data_dir>/tmp`); `commit` then sends the spool
file under `<prefix>/<2 hex>/<64 hex>` (multipart above `PART_SIZE`) and removes it at once. Every
store error surfaces as `OSError`, which the pipeline turns into a per-file `storage_error`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from rhinobox.blobs.digest import is_digest
from rhinobox.blobs.layout import FANOUT_HEX_CHARS, blob_name
from rhinobox.errors import BlobNotFound, StorageError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

__all__ = ["PART_SIZE", "S3BlobStore", "S3Location", "parse_s3_url"]

# Parts of a multipart upload; S3 wants >= 5 MiB per part (all but the last), Swift's s3api too.
PART_SIZE: Final = 8 * 1024 * 1024
PART_CONCURRENCY: Final = 4
READ_CHUNK: Final = 256 * 1024
CONNECT_TIMEOUT: Final = "5s"
REQUEST_TIMEOUT: Final = "300s"
MAX_RETRIES: Final = 3
RETRY_TIMEOUT: Final = timedelta(seconds=30)
_STATUS: Final = re.compile(r"status code: (\d{3})")
# obstore raises builtin FileNotFoundError for a missing object (its own NotFoundError is declared too).
_NOT_FOUND: Final = (FileNotFoundError, NotFoundError)
_STORE_ERRORS: Final = (BaseError, OSError)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where blobs live: a bucket and a key prefix inside it (no leading or trailing slash)."""

    bucket: str
    prefix: str


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket/prefix` -> S3Location; raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"blob store URL must start with s3://, got {url!r}")
    if not parts.netloc:
        raise ValueError(f"blob store URL names no bucket: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"blob store URL must not carry a query or fragment: {url!r}")
    return S3Location(bucket=parts.netloc, prefix=parts.path.strip("/"))


def _failure(action: str, exc: BaseException) -> str:
    """A store failure for clients (`S3 PUT failed (HTTP 503)`); the details (URLs, bodies) go to the log."""
    text = str(exc).strip()
    log.warning("S3 %s failed: %s", action, text.splitlines()[0] if text else repr(exc))
    status = _STATUS.search(text)
    return f"S3 {action} failed ({f'HTTP {status.group(1)}' if status else type(exc).__name__})"


def _os_error(action: str, exc: BaseException) -> OSError:
    """The OSError the pipeline expects from a store, turned into a per-file `storage_error`."""
    return OSError(errno.EIO, _failure(action, exc))


class S3BlobStore:
    """A `BlobStore` on an S3 bucket. Blocking methods use obstore's sync API (it releases the GIL)."""

    inline_io = False  # every call is a network round trip: never on the event loop
    names_may_outlive_bytes = False  # a key appears with its whole object or not at all
    sync_failure: OSError | None = None  # nothing to sync

    def __init__(
        self,
        location: S3Location,
        spool_dir: Path,
        *,
        endpoint: str = "",
        region: str = "us-east-1",
        access_key: str = "",
        secret_key: str = "",
    ) -> None:
        self.location = location
        self._spool_dir = spool_dir
        self._endpoint = endpoint
        self._region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._store: S3Store | None = None

    @property
    def spool_dir(self) -> Path:
        return self._spool_dir

    def open(self) -> None:
        """Create the spool dir, build the client, and fail fast if the bucket cannot be listed."""
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        client: ClientConfig = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT}
        if self._endpoint.startswith("http://"):
            client["allow_http"] = True
        retry: RetryConfig = {"max_retries": MAX_RETRIES, "retry_timeout": RETRY_TIMEOUT}
        config: S3Config = {"region": self._region, "virtual_hosted_style_request": False}
        if self._endpoint:
            config["endpoint"] = self._endpoint
        # Empty credentials fall back to obstore's AWS chain (AWS_* variables, instance roles).
        if self._access_key:
            config["access_key_id"] = self._access_key
        if self._secret_key:
            config["secret_access_key"] = self._secret_key
        store = S3Store(
            self.location.bucket,
            prefix=self.location.prefix or None,
            config=config,
            client_options=client,
            retry_config=retry,
        )
        try:
            next(iter(obstore.list(store, chunk_size=1)), None)
        except _STORE_ERRORS as exc:
            raise StorageError(f"S3 bucket {self.location.bucket!r} is not usable: {_failure('LIST', exc)}") from exc
        self._store = store

    def close(self) -> None:
        self._store = None

    def _client(self) -> S3Store:
        if self._store is None:
            raise RuntimeError("blob store is not open")
        return self._store

    @staticmethod
    def key_for(digest: str) -> str:
        """The object key of a blob, relative to the prefix (fanned out like the local store)."""
        return blob_name(digest)

    def relative_name(self, digest: str) -> str:
        return blob_name(digest)

    def _head_size(self, digest: str) -> int | None:
        try:
            meta = obstore.head(self._client(), self.key_for(digest))
        except _NOT_FOUND:
            return None
        except _STORE_ERRORS as exc:
            raise _os_error("HEAD", exc) from exc
        return int(meta["size"])

    def contains(self, digest: str) -> bool:
        return self._head_size(digest) is not None

    def commit(self, spool_path: str, digest: str) -> bool:
        """HEAD, then PUT unless present (Swift has no `If-None-Match: *`); the spool file goes either way.

        Two commits of the same new key racing would both PUT (identical bytes: harmless) and both
        answer True: the ingest arbiter's commit guard (`HashArbiter.committing`) keeps it to one.
        """
        try:
            if self.contains(digest):
                return False
            size = os.stat(spool_path).st_size
            try:
                obstore.put(
                    self._client(),
                    self.key_for(digest),
                    Path(spool_path),  # a str would be sent as the body itself
                    use_multipart=size > PART_SIZE,
                    chunk_size=PART_SIZE,
                    max_concurrency=PART_CONCURRENCY,
                )
            except _STORE_ERRORS as exc:  # a missing bucket is a FileNotFoundError here
                raise _os_error("PUT", exc) from exc
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool_path)

    def needs_flush(self, digest: str) -> bool:
        return False  # a PUT is durable once acknowledged

    async def flush(self) -> None:
        return None

    def sync_covering(self, path: Path) -> Callable[[], None] | None:
        return None  # objects are durable once PUT; a local catalog keeps its own fsync

    def on_durable(self, callback: Callable[[float], None]) -> None:
        return None  # every acknowledged PUT is already durable: nothing to report

    def iter_changed_since(self, when: float) -> Iterator[str]:
        return iter(())  # a key appears with its whole object or not at all: nothing to check

    def delete(self, digest: str) -> bool:
        if not self.contains(digest):
            return False
        try:
            obstore.delete(self._client(), self.key_for(digest))
        except _NOT_FOUND:
            return False
        except _STORE_ERRORS as exc:
            raise _os_error("DELETE", exc) from exc
        return True

    def size(self, digest: str) -> int | None:
        return self._head_size(digest)

    def local_path(self, digest: str) -> Path | None:
        return None

    async def read_range(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream [start, end) with one ranged GET; raises BlobNotFound if the object is gone."""
        if end <= start:
            return
        try:
            result = await obstore.get_async(self._client(), self.key_for(digest), options={"range": (start, end)})
        except _NOT_FOUND:
            raise BlobNotFound() from None
        except _STORE_ERRORS as exc:
            raise StorageError(_failure("GET", exc)) from exc
        try:
            async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)
        except _STORE_ERRORS as exc:
            raise StorageError(_failure("GET", exc)) from exc

    def iter_digests(self) -> Iterator[str]:
        try:
            for page in obstore.list(self._client()):
                for meta in page:
                    fanout, _, name = meta["path"].rpartition("/")
                    if is_digest(name) and name.startswith(fanout) and len(fanout) == FANOUT_HEX_CHARS:
                        yield name
        except _STORE_ERRORS as exc:
            raise _os_error("LIST", exc) from exc

    def remove_stale_spool(self) -> int:
        removed = 0
        for entry in os.scandir(self._spool_dir):
            if entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed += 1
        return removed
