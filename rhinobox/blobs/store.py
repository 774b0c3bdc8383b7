"""The `BlobStore` protocol: what the ingest pipeline and the HTTP layer may ask of blob storage.

Blocking methods are called from worker threads; `flush` is awaited on the event loop so that
concurrent callers can share one durability barrier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Protocol

__all__ = ["BlobStore"]


class BlobStore(Protocol):
    """Content-addressed bytes. A blob is immutable once committed; commit never overwrites."""

    # True if `contains` and `commit` are quick local filesystem calls that may run on the event loop
    # (ingest's single-file fast path); False for network stores, whose calls always go to a worker.
    inline_io: bool
    # True if a machine crash can leave a committed name without its bytes: a local commit renames
    # before the one grouped sync that covers both. Start-up after an unclean stop then hashes the
    # orphans and the blobs named since the last sync (`rhinobox.reconcile`). False for an atomic PUT.
    names_may_outlive_bytes: bool
    # Set once a sync reported an error: every later flush fails until a restart (`/healthz` says so).
    sync_failure: OSError | None

    def open(self) -> None:
        """Prepare the store for use (blocking; called once at start)."""
        ...

    def close(self) -> None:
        """Release resources (blocking; called once at shutdown)."""
        ...

    @property
    def spool_dir(self) -> Path:
        """Where uploads are spooled before commit (same filesystem as the blobs, for rename)."""
        ...

    def contains(self, digest: str) -> bool:
        """True if a blob with this digest is stored."""
        ...

    def commit(self, spool_path: str, digest: str) -> bool:
        """Move a fully written spool file in as `digest`; True if new, False if it already existed.

        The spool file is gone afterwards either way. The caller has verified the digest.
        """
        ...

    def needs_flush(self, digest: str) -> bool:
        """True if the blob was committed but the commit may not be durable yet."""
        ...

    async def flush(self) -> None:
        """Return once every spool write and commit finished before the call is durable (bytes and names)."""
        ...

    def sync_covering(self, path: Path) -> Callable[[], None] | None:
        """A blocking call that makes this store's commits and every write to `path`'s filesystem durable.

        None if the store has no such sync (or `path` is elsewhere). A SQLite catalog on the same disk
        then commits without its own fsync and calls it instead: one sync for the blobs and the row.
        """
        ...

    def on_durable(self, callback: Callable[[float], None]) -> None:
        """Call `callback(t)` after each sync: every commit the kernel finished before wall time t is durable."""
        ...

    def delete(self, digest: str) -> bool:
        """Remove a blob; True if it existed."""
        ...

    def size(self, digest: str) -> int | None:
        """The stored size of a blob, or None if absent."""
        ...

    def relative_name(self, digest: str) -> str:
        """The blob's name below the store's root (`ab/abcd...`): what a proxy serving the store asks for."""
        ...

    def local_path(self, digest: str) -> Path | None:
        """A filesystem path to serve the blob from (sendfile), or None if the backend has none."""
        ...

    def read_range(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) of a blob (for backends without `local_path`); raises BlobNotFound."""
        ...

    def iter_digests(self) -> Iterator[str]:
        """Every stored digest, in no particular order (for reconciliation and verify)."""
        ...

    def iter_changed_since(self, when: float) -> Iterator[str]:
        """Digests whose blob was named at or after wall time `when` (the start-up check after a crash)."""
        ...

    def remove_stale_spool(self) -> int:
        """Delete spool files left by a previous process (call before serving); returns the count."""
        ...
