"""What one ingest request produced: its files in order, and the text fields that apply to all of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from rhinobox.ingest.entry import FileEntry

__all__ = ["FALLBACK_CATEGORY", "IngestReport", "UploadMeta", "upload_category"]

FALLBACK_CATEGORY: Final = "other/octet-stream"


def upload_category(blob_category: str, hint: str | None) -> str:
    """The category of one upload: its blob's category, with the request's hint as a sub-folder."""
    return f"{blob_category}/{hint}" if hint else blob_category


@dataclass(frozen=True, slots=True)
class UploadMeta:
    """What a client said about every file of one upload: the category hint and a comment."""

    hint: str | None = None
    comment: str | None = None

    def category_of(self, entry: FileEntry) -> str | None:
        """The upload's category, once the file's blob has one."""
        return upload_category(entry.blob_category, self.hint) if entry.blob_category else None


@dataclass(frozen=True, slots=True)
class IngestReport:
    """The outcome of one request: every file part in order, and what the client said about them."""

    entries: list[FileEntry]
    meta: UploadMeta

    @property
    def hint(self) -> str | None:
        return self.meta.hint

    @property
    def comment(self) -> str | None:
        return self.meta.comment

    def category_of(self, entry: FileEntry) -> str | None:
        return self.meta.category_of(entry)
