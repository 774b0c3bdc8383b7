"""Where blobs and spool files live, the same for every backend: `<fanout>/<digest>`, spool under `tmp/`."""

from __future__ import annotations

from typing import Final

__all__ = ["BLOBS_DIRNAME", "FANOUT_HEX_CHARS", "SPOOL_DIRNAME", "blob_name"]

FANOUT_HEX_CHARS: Final = 2  # 256 directories (or key prefixes) keep each one small
BLOBS_DIRNAME: Final = "blobs"  # below the data directory
SPOOL_DIRNAME: Final = "tmp"  # below the data directory, on the blobs' filesystem so commit is a rename


def blob_name(digest: str) -> str:
    """A blob's name below the store's root: `ab/abcdef...` (a file path or an object key)."""
    return f"{digest[:FANOUT_HEX_CHARS]}/{digest}"
