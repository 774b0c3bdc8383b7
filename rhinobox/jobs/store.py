"""`JobStore`: where job records live, so they survive the process that ran them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rhinobox.jobs.model import FileResult, Job, JobError

__all__ = ["JobStore"]


class JobStore(Protocol):
    """Durable job records. Results are only ever appended; a job row is upserted whole."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save(self, job: Job, new_results: Sequence[FileResult]) -> None:
        """Upsert `job`'s row and append `new_results`, in one transaction."""
        ...

    async def delete(self, job_id: str) -> None:
        """Forget a job the client never learned about."""
        ...

    async def load(self, job_id: str) -> Job | None:
        """The job with every result saved so far, or None if unknown (or expired)."""
        ...

    async def interrupt_unfinished(self, now: float, error: JobError) -> int:
        """Mark every queued or running job interrupted (called at start: nothing runs yet)."""
        ...

    async def expire(self, finished_before: float) -> int:
        """Delete jobs that ended before `finished_before`; returns how many."""
        ...
