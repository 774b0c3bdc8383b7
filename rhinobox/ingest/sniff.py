"""MIME detection with libmagic on a file's first bytes; one `magic.Magic` per thread (not thread-safe)."""

from __future__ import annotations

import threading
from typing import Final

import magic

from rhinobox.ingest.signatures import match_signature

__all__ = ["FALLBACK_MIME", "SNIFF_BYTES", "MimeSniffer"]

# libmagic decides on the first few KiB; feeding more only slows it (20-100x on text).
SNIFF_BYTES: Final = 2048
FALLBACK_MIME: Final = "application/octet-stream"


class MimeSniffer:
    """Detects MIME types; safe to share between threads (each thread gets its own handle)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def warm_up(self) -> None:
        """Load libmagic's database for the calling thread now (it takes milliseconds), not on a request."""
        self._handle()

    def _handle(self) -> magic.Magic:
        handle: magic.Magic | None = getattr(self._local, "magic", None)
        if handle is None:
            handle = magic.Magic(mime=True)
            self._local.magic = handle
        return handle

    def sniff(self, head: bytes | memoryview) -> str:
        """The MIME type of content starting with `head` (only SNIFF_BYTES are looked at)."""
        known = match_signature(head)
        if known is not None:
            return known
        sample = bytes(head[:SNIFF_BYTES])
        try:
            mime = self._handle().from_buffer(sample)
        except magic.MagicException:
            return FALLBACK_MIME
        if not isinstance(mime, str) or not mime.strip():
            return FALLBACK_MIME
        return mime.strip().lower()
