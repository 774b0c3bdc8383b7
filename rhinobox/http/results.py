"""The JSON shape of ingest results, shared by the synchronous answer and async jobs' progress."""

from __future__ import annotations

from typing import Any

from rhinobox.http.errors import status_for
from rhinobox.ingest.entry import DUPLICATE, STORED, FileEntry
from rhinobox.ingest.report import IngestReport, UploadMeta

__all__ = ["file_result", "report_body", "report_status"]


def file_result(entry: FileEntry, meta: UploadMeta) -> dict[str, Any]:
    """One file's result: its place in the request, what became of it, and where to fetch it."""
    error = entry.error
    return {
        "index": entry.index,
        "name": entry.name,
        "status": "error" if error else entry.status,
        "hash": entry.digest if not error else None,
        "size": entry.size if not error else None,
        "mime": entry.mime if not error else None,
        "category": meta.category_of(entry) if not error else None,
        "url": f"/files/{entry.digest}" if not error else None,
        "error": {"code": error.code, "message": error.message} if error else None,
    }


def report_body(report: IngestReport) -> dict[str, Any]:
    results = [file_result(entry, report.meta) for entry in report.entries]
    return {
        "results": results,
        "stored": sum(1 for e in report.entries if e.ok and e.status == STORED),
        "duplicates": sum(1 for e in report.entries if e.ok and e.status == DUPLICATE),
        "failed": sum(1 for e in report.entries if not e.ok),
    }


def report_status(report: IngestReport) -> int:
    """200 if all succeeded; a lone failed file gives its own status; otherwise 207."""
    failed = [e.error for e in report.entries if e.error is not None]
    if not failed:
        return 200
    if len(report.entries) == 1:
        return status_for(failed[0])
    return 207
