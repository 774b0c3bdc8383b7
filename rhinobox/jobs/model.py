"""A job's record: its state, counters, and the per-file results known so far."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = ["FINAL_STATES", "FileResult", "Job", "JobError", "JobState", "job_columns"]

# One file's result, exactly as the synchronous `POST /ingest` gives it (see rhinobox/http/ingest.py).
FileResult = dict[str, Any]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


FINAL_STATES: Final = frozenset({JobState.DONE, JobState.FAILED, JobState.INTERRUPTED})


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job stopped before every file had a result (a stable code and a message)."""

    code: str
    message: str


@dataclass(slots=True)
class Job:
    """Mutable while the job runs (on the event loop only); stores keep snapshots of it."""

    id: str
    state: JobState
    created_at: float
    updated_at: float
    total: int = 0
    done: int = 0
    stored: int = 0
    duplicate: int = 0
    failed: int = 0
    received_bytes: int = 0
    processed_bytes: int = 0
    finished_at: float | None = None
    error: JobError | None = None
    results: list[FileResult] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def count(self, result: FileResult) -> None:
        """Fold one file's final result into the counters."""
        self.done += 1
        status = result.get("status")
        if status == "stored":
            self.stored += 1
        elif status == "duplicate":
            self.duplicate += 1
        else:
            self.failed += 1
        if status != "error":
            self.processed_bytes += int(result.get("size") or 0)

    def snapshot(self) -> Job:
        """A copy without results (they are appended, never rewritten, so stores take them separately)."""
        return dataclasses.replace(self, results=[])

    def summary(self) -> dict[str, Any]:
        """State, counts and bytes: what every status answer and progress event carries."""
        return {
            "job": self.id,
            "state": self.state.value,
            "counts": {
                "total": self.total,
                "done": self.done,
                "stored": self.stored,
                "duplicate": self.duplicate,
                "failed": self.failed,
            },
            "bytes": {"received": self.received_bytes, "processed": self.processed_bytes},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "error": {"code": self.error.code, "message": self.error.message} if self.error else None,
        }

    def as_json(self) -> dict[str, Any]:
        """The summary plus, once the job has ended, the results in the request's order."""
        body = self.summary()
        body["results"] = sorted(self.results, key=lambda r: int(r["index"])) if self.final else None
        return body


def job_columns(job: Job) -> tuple[object, ...]:
    """A job's stored columns, in the order both job stores write them."""
    error = job.error
    return (
        job.id,
        job.state.value,
        job.created_at,
        job.updated_at,
        job.finished_at,
        job.total,
        job.done,
        job.stored,
        job.duplicate,
        job.failed,
        job.received_bytes,
        job.processed_bytes,
        error.code if error else None,
        error.message if error else None,
    )
