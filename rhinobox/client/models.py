"""Typed views of the server's JSON answers (each keeps the raw JSON as `raw` for anything newer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "CategoryStats",
    "ErrorInfo",
    "FileMeta",
    "FilePage",
    "FileResult",
    "IngestResult",
    "JobCounts",
    "JobEvent",
    "JobRef",
    "JobStatus",
    "Stats",
    "StoredFile",
    "UploadInfo",
]

FINAL_JOB_STATES: Final = frozenset({"done", "failed", "interrupted"})


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    message: str

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ErrorInfo | None:
        return None if data is None else cls(str(data.get("code", "")), str(data.get("message", "")))


@dataclass(frozen=True, slots=True)
class FileResult:
    """One file's outcome, as `POST /ingest` reports it (`status`: stored, duplicate or error)."""

    index: int
    name: str
    status: str
    hash: str | None
    size: int | None
    mime: str | None
    category: str | None
    url: str | None
    error: ErrorInfo | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status != "error"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileResult:
        return cls(
            index=int(data["index"]),
            name=str(data.get("name", "")),
            status=str(data["status"]),
            hash=data.get("hash"),
            size=data.get("size"),
            mime=data.get("mime"),
            category=data.get("category"),
            url=data.get("url"),
            error=ErrorInfo.from_json(data.get("error")),
        )


@dataclass(frozen=True, slots=True)
class IngestResult:
    """A whole ingest answer: one result per file in the request's order, and the HTTP status."""

    results: list[FileResult]
    stored: int
    duplicates: int
    failed: int
    http_status: int

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @classmethod
    def from_json(cls, data: dict[str, Any], http_status: int) -> IngestResult:
        return cls(
            results=[FileResult.from_json(r) for r in data["results"]],
            stored=int(data.get("stored", 0)),
            duplicates=int(data.get("duplicates", 0)),
            failed=int(data.get("failed", 0)),
            http_status=http_status,
        )


@dataclass(frozen=True, slots=True)
class JobRef:
    """What `POST /ingest?async=true` answers: the job id and where to follow it."""

    job: str
    status_url: str
    events_url: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRef:
        return cls(str(data["job"]), str(data["status_url"]), str(data["events_url"]))


@dataclass(frozen=True, slots=True)
class JobCounts:
    total: int
    done: int
    stored: int
    duplicate: int
    failed: int


@dataclass(frozen=True, slots=True)
class JobStatus:
    """`GET /jobs/{id}`: state, counts, bytes, and (once ended) the per-file results in order."""

    job: str
    state: str
    counts: JobCounts
    bytes_received: int
    bytes_processed: int
    error: ErrorInfo | None
    results: list[FileResult] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobStatus:
        counts = data.get("counts", {})
        sizes = data.get("bytes", {})
        results = data.get("results")
        return cls(
            job=str(data["job"]),
            state=str(data["state"]),
            counts=JobCounts(*(int(counts.get(k, 0)) for k in ("total", "done", "stored", "duplicate", "failed"))),
            bytes_received=int(sizes.get("received", 0)),
            bytes_processed=int(sizes.get("processed", 0)),
            error=ErrorInfo.from_json(data.get("error")),
            results=None if results is None else [FileResult.from_json(r) for r in results],
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One Server-Sent Event of a job: `kind` is state, progress or end; `result` comes with progress."""

    kind: str
    status: JobStatus
    result: FileResult | None

    @classmethod
    def from_json(cls, kind: str, data: dict[str, Any]) -> JobEvent:
        result = data.get("result")
        return cls(kind, JobStatus.from_json(data), None if result is None else FileResult.from_json(result))


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One blob as `GET /files` and `GET /files/{hash}/meta` describe it (times are ISO 8601, UTC)."""

    hash: str
    size: int
    mime: str
    category: str
    first_upload_at: str
    last_upload_at: str
    upload_count: int
    url: str
    name: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredFile:
        return cls(
            hash=str(data["hash"]),
            size=int(data["size"]),
            mime=str(data.get("mime", "")),
            category=str(data.get("category", "")),
            first_upload_at=str(data.get("first_upload_at", "")),
            last_upload_at=str(data.get("last_upload_at", "")),
            upload_count=int(data.get("upload_count", 0)),
            url=str(data.get("url", f"/files/{data['hash']}")),
            name=data.get("name"),
        )


@dataclass(frozen=True, slots=True)
class FilePage:
    """A page of `GET /files`, newest first; pass `next` as `cursor` for the following page."""

    files: list[StoredFile]
    next: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FilePage:
        return cls([StoredFile.from_json(f) for f in data.get("files", [])], data.get("next"))


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """One recorded upload of a blob: the name, category and comment it came with."""

    name: str
    category: str
    hint: str | None
    comment: str | None
    claimed_type: str | None
    uploaded_at: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadInfo:
        return cls(
            name=str(data.get("name", "")),
            category=str(data.get("category", "")),
            hint=data.get("hint"),
            comment=data.get("comment"),
            claimed_type=data.get("claimed_type"),
            uploaded_at=str(data.get("uploaded_at", "")),
        )


@dataclass(frozen=True, slots=True)
class FileMeta:
    """`GET /files/{hash}/meta`: the blob and a page of its uploads (`next` pages on)."""

    file: StoredFile
    uploads: list[UploadInfo]
    next: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileMeta:
        uploads = [UploadInfo.from_json(u) for u in data.get("uploads", [])]
        return cls(StoredFile.from_json(data), uploads, data.get("next"))


@dataclass(frozen=True, slots=True)
class CategoryStats:
    blobs: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Stats:
    """`GET /stats`: what the store holds and what deduplication saved."""

    blobs: int
    bytes_stored: int
    uploads: int
    bytes_uploaded: int
    bytes_saved: int
    categories: dict[str, CategoryStats]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stats:
        return cls(
            blobs=int(data.get("blobs", 0)),
            bytes_stored=int(data.get("bytes_stored", 0)),
            uploads=int(data.get("uploads", 0)),
            bytes_uploaded=int(data.get("bytes_uploaded", 0)),
            bytes_saved=int(data.get("bytes_saved", 0)),
            categories={
                name: CategoryStats(int(c.get("blobs", 0)), int(c.get("bytes", 0)))
                for name, c in data.get("categories", {}).items()
            },
        )
