"""The `Catalog` protocol and the records that cross it.

Everything here is backend-neutral: SQLite and PostgreSQL implement the same methods and pass the
same contract tests (tests/catalog_contract.py).
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

__all__ = [
    "MAX_PAGE",
    "BlobInfo",
    "BlobPage",
    "BlobQuery",
    "Catalog",
    "CatalogStats",
    "CategoryStats",
    "StoredUpload",
    "UploadRecord",
    "category_prefixes",
    "query_can_match",
]

MAX_PAGE: Final = 1000  # the most rows one listing call returns
# Unicode categories no stored name, category or type holds: names drop them (ingest/names.py,
# clean_filename), categories and types are lowercase ASCII. NUL and lone surrogates among them
# cannot even be bound as query text (SQLite cuts a LIKE pattern at NUL; PostgreSQL text refuses both).
NEVER_STORED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})


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


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One distinct content as the catalog knows it. `id` grows with every new blob, never reused."""

    id: int
    digest: str
    size: int
    mime: str
    category: str
    first_upload_at: float
    last_upload_at: float
    upload_count: int
    name: str | None = None  # the first upload's name, where a listing provides it


@dataclass(frozen=True, slots=True)
class StoredUpload:
    """An upload record read back; `id` orders a blob's uploads and pages through them."""

    id: int
    name: str
    category: str
    hint: str | None
    comment: str | None
    claimed_type: str | None
    uploaded_at: float


@dataclass(frozen=True, slots=True)
class BlobQuery:
    """Filters of a blob listing; None means "no filter". All given filters must hold.

    `category` is a whole-segment prefix of the blob's category or of any upload's category
    (`images` matches `images/png` and `images/png/holiday`, not `imagesets/x`). `name` is a
    case-insensitive substring of any upload name. Sizes are inclusive, `since` inclusive and
    `until` exclusive, both on `first_upload_at`. A text filter holding a character no stored value
    can hold (a control character: `query_can_match`) matches nothing, on every backend.
    """

    category: str | None = None
    mime: str | None = None
    name: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class BlobPage:
    """One page of a listing, newest first; pass `next_before` back to get the next page."""

    blobs: list[BlobInfo]
    next_before: int | None


@dataclass(frozen=True, slots=True)
class CategoryStats:
    blobs: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CatalogStats:
    """Totals; `bytes_uploaded` counts every upload's size, so the dedup saving is the difference."""

    blobs: int
    bytes_stored: int
    uploads: int
    bytes_uploaded: int
    by_category: Mapping[str, CategoryStats] = field(default_factory=dict)

    @property
    def bytes_saved(self) -> int:
        return self.bytes_uploaded - self.bytes_stored


def query_can_match(query: BlobQuery) -> bool:
    """False if a text filter holds a character that no stored value holds: the listing is empty.

    Backends answer such a query without asking their database, so all of them agree (no error, no
    filter cut short at a NUL).
    """
    return all(_storable(text) for text in (query.name, query.category, query.mime) if text is not None)


def _storable(text: str) -> bool:
    return text.isprintable() or not any(unicodedata.category(ch) in NEVER_STORED_CATEGORIES for ch in text)


def category_prefixes(category: str) -> list[str]:
    """Every whole-segment prefix of a category, itself included: `a/b/c` gives `a`, `a/b`, `a/b/c`."""
    parts = category.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class Catalog(Protocol):
    """Metadata storage. Writes from concurrent requests may be grouped into one transaction."""

    @property
    def makes_blobs_durable(self) -> bool:
        """True if a durable write also makes every blob committed before it durable (one shared sync).

        Ingest then skips its own blob flush before recording: the record's sync covers both.
        """
        ...

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

    async def known_mimes(self, digests: Iterable[str]) -> dict[str, str]:
        """The stored MIME type of each of `digests` the catalog knows (ingest skips sniffing those)."""
        ...

    def iter_digests(self, page_size: int = 1000) -> AsyncIterator[list[str]]:
        """Every blob digest in the catalog, a page at a time."""
        ...

    async def get_blob(self, digest: str) -> BlobInfo | None:
        """The blob with this digest, or None."""
        ...

    async def list_uploads(self, digest: str, *, after: int | None = None, limit: int = 100) -> list[StoredUpload]:
        """A blob's uploads oldest first, those with `id > after`, at most `limit` (<= MAX_PAGE)."""
        ...

    async def list_blobs(self, query: BlobQuery, *, before: int | None = None, limit: int = 100) -> BlobPage:
        """Blobs matching `query` with `id < before`, newest (highest id) first, at most `limit` (<= MAX_PAGE).

        Keyset pagination: blobs added while a client pages are never repeated nor make it skip one.
        """
        ...

    async def stats(self) -> CatalogStats:
        """Counts and byte totals, overall and by blob category (cheap: not a scan)."""
        ...

    async def delete_blob(self, digest: str) -> bool:
        """Durably remove a blob's entry and all its upload records in one transaction; True if it existed."""
        ...
