"""`FileEntry`: one file part of one request, as it moves through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from rhinobox.errors import RhinoBoxError
from rhinobox.ingest.blocks import BlockSpooler
from rhinobox.ingest.buffers import Arena
from rhinobox.ingest.spool import SpoolWriter

__all__ = ["DUPLICATE", "STORED", "FileEntry", "Status"]

STORED: Final = "stored"
DUPLICATE: Final = "duplicate"
Status = Literal["stored", "duplicate", "error"]


@dataclass(slots=True, eq=False)
class FileEntry:
    """Mutable state of one file; only one thread touches it at a time (loop, or the worker it was handed to)."""

    index: int
    name: str
    extension: str
    claimed_type: str | None
    expected_digest: str | None = None
    size: int = 0
    error: RhinoBoxError | None = None
    # Where the bytes are while streaming: a slice of an arena, or a spool file being written.
    arena: Arena | None = None
    offset: int = 0
    writer: BlockSpooler[SpoolWriter] | None = None
    # Filled in by preparation and commit.
    digest: str | None = None
    mime: str | None = None
    blob_category: str | None = None
    spool_path: str | None = None
    pinned: bool = False
    status: Status | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def fail(self, error: RhinoBoxError) -> None:
        """Record the first error; later ones are consequences of it."""
        if self.error is None:
            self.error = error
