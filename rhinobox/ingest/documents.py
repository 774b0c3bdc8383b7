"""`DocumentScan`: what type detection keeps of a large upload while it streams to its spool file.

libmagic, run by `file` on a whole file, decides a text file's encoding and every text test within
the first 64 KiB (FILE_ENCODING_MAX), but JSON only after parsing all of it. A scan keeps that head
and feeds every byte past a streaming JSON parser, so a spooled file is typed as `file` would type
it without being held in memory or read back from disk.
"""

from __future__ import annotations

from typing import Final

from rhinobox.ingest.jsonscan import JsonScan

__all__ = ["DOCUMENT_HEAD_BYTES", "DocumentScan"]

# libmagic's FILE_ENCODING_MAX: text-ness and the text tests look no further than this.
DOCUMENT_HEAD_BYTES: Final = 64 * 1024


class DocumentScan:
    """Feed a file's bytes in order; then `head` and `json_mime` are what the sniffer needs."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._json = JsonScan()
        self.size = 0

    @property
    def head(self) -> bytes:
        """The first DOCUMENT_HEAD_BYTES (all of a smaller file)."""
        return bytes(self._head)

    def feed(self, piece: bytes | memoryview) -> None:
        """Take the next piece (blocking for a large JSON document: call from a worker thread)."""
        missing = DOCUMENT_HEAD_BYTES - len(self._head)
        if missing > 0:
            self._head += piece[:missing]
        self.size += len(piece)
        self._json.feed(piece)

    def json_mime(self) -> str | None:
        """`application/json` or `application/x-ndjson` if the whole document is, else None."""
        return self._json.finish()
