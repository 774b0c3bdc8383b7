"""`JobStore`: where job records live, so they survive the process that ran them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rhinobox.jobs.model import FileResult, Job, JobError

__all__ = ["JobStore"]


class JobStore(Protocol):
    """Durable job records. Results are only ever appended; a job row is upserted whole.

    A `shared` store is used by several nodes at once: each job row names the node that runs it, and
    that node renews a lease on it (`heartbeat`); a job whose lease ran out is one nobody runs any more.
    """

    @property
    def shared(self) -> bool:
        """True when other processes run jobs recorded here too (so unfinished does not mean abandoned)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save(self, job: Job, new_results: Sequence[FileResult]) -> None:
        """Upsert `job`'s row and append `new_results`, in one transaction."""
        ...

    async def delete(self, job_id: str) -> None:
        """Forget a job the client never learned about."""
        ...

    async def load(self, job_id: str, *, results: bool = True) -> Job | None:
        """The job with every result saved so far (or none, if not `results`), or None if unknown."""
        ...

    async def heartbeat(self, job_ids: Sequence[str]) -> None:
        """Renew this node's lease on the jobs it runs (nothing to do in a store no one else uses)."""
        ...

    async def interrupt_unfinished(self, now: float, error: JobError, *, lease: float) -> int:
        """Mark interrupted the queued or running jobs that nothing runs any more; returns how many.

        In a store only this process uses, that is every one (called at start, before any job runs).
        In a shared store, it is those whose last heartbeat is older than `lease` seconds, whichever
        node they belonged to (node ids are new at each start, so "mine" cannot be told apart).
        """
        ...

    async def expire(self, finished_before: float) -> int:
        """Delete jobs that ended before `finished_before`; returns how many."""
        ...
