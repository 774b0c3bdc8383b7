"""Async ingest jobs: work that outlives its request, with live progress and a durable record."""

from rhinobox.jobs.manager import JobEvent, JobManager
from rhinobox.jobs.model import FINAL_STATES, FileResult, Job, JobError, JobState
from rhinobox.jobs.sqlite import SQLiteJobStore, job_store_for
from rhinobox.jobs.store import JobStore

__all__ = [
    "FINAL_STATES",
    "FileResult",
    "Job",
    "JobError",
    "JobEvent",
    "JobManager",
    "JobState",
    "JobStore",
    "SQLiteJobStore",
    "job_store_for",
]
