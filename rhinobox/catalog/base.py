"""The `Catalog` protocol and the records that cross it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Catalog", "UploadRecord"]


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One upload of one file: the blob it resolved to and what the client said about it."""

    digest: str
    size: int
    mime: str
    blob_category: str
    category: str
    name: str
    hint: str | None
    comment: str | None
    claimed_type: str | None
    uploaded_at: float


class Catalog(Protocol):
    """Metadata storage. Writes from concurrent requests may be grouped into one transaction."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the catalog cannot answer a query."""
        ...

    async def record_uploads(self, records: Sequence[UploadRecord]) -> None:
        """Durably record uploads (and their blobs, if new to the catalog) in one transaction."""
        ...

    async def known_digests(self, digests: Iterable[str]) -> set[str]:
        """The subset of `digests` that the catalog has a blob entry for (one query per batch)."""
        ...

    def iter_digests(self, page_size: int = 1000) -> AsyncIterator[list[str]]:
        """Every blob digest in the catalog, a page at a time."""
        ...
