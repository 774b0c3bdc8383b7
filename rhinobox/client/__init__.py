"""An async Python client for RhinoBox (see docs/client.md)."""

from rhinobox.client.client import DEFAULT_SERVER, RhinoBoxClient
from rhinobox.client.errors import RhinoBoxClientError, ServerError
from rhinobox.client.models import (
    CategoryStats,
    ErrorInfo,
    FileMeta,
    FilePage,
    FileResult,
    IngestResult,
    JobCounts,
    JobEvent,
    JobRef,
    JobStatus,
    Stats,
    StoredFile,
    UploadInfo,
)
from rhinobox.client.retry import RetryPolicy
from rhinobox.client.uploads import LocalFile, hash_file

__all__ = [
    "DEFAULT_SERVER",
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
    "LocalFile",
    "RetryPolicy",
    "RhinoBoxClient",
    "RhinoBoxClientError",
    "ServerError",
    "Stats",
    "StoredFile",
    "UploadInfo",
    "hash_file",
]
