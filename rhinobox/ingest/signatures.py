"""Unambiguous media signatures, checked before libmagic: a header match answers in a microsecond.

libmagic walks its whole database for content it does not recognise early (about 200 us for 4 KiB
of compressed or random bytes, up to 900 us for text); the common media formats announce themselves
in their first bytes. Each entry here gives exactly the MIME type libmagic gives for that header
(tests/test_signatures.py checks that against libmagic itself); anything else goes to libmagic.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIN_SIGNATURE_BYTES", "SIGNATURES", "match_signature"]

# Below this, libmagic's answer for a bare header can differ (too little to go on): let it decide.
MIN_SIGNATURE_BYTES: Final = 32

# (offset, bytes) checks that must all hold, and the MIME type libmagic reports for them.
SIGNATURES: Final[tuple[tuple[tuple[tuple[int, bytes], ...], str], ...]] = (
    (((0, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),), "image/png"),
    (((0, b"\xff\xd8\xff"),), "image/jpeg"),
    (((0, b"GIF89a"),), "image/gif"),
    (((0, b"GIF87a"),), "image/gif"),
    (((0, b"%PDF-"),), "application/pdf"),
    (((0, b"RIFF"), (8, b"WEBP")), "image/webp"),
    (((0, b"RIFF"), (8, b"WAVEfmt ")), "audio/x-wav"),
    (((0, b"fLaC"),), "audio/flac"),
    (((4, b"ftypisom"),), "video/mp4"),
    (((4, b"ftypmp41"),), "video/mp4"),
    (((4, b"ftypmp42"),), "video/mp4"),
    (((4, b"ftypavc1"),), "video/mp4"),
    (((4, b"ftypiso2"),), "video/mp4"),
    (((4, b"ftypqt  "),), "video/quicktime"),
    (((4, b"ftypheic"),), "image/heic"),
    (((4, b"ftypavif"),), "image/avif"),
    (((0, b"II*\x00"),), "image/tiff"),
    (((0, b"MM\x00*"),), "image/tiff"),
    (((0, b"\x28\xb5\x2f\xfd"),), "application/zstd"),
    (((0, b"\xfd7zXZ\x00"),), "application/x-xz"),
    (((0, b"BZh9"),), "application/x-bzip2"),
)


_Entry = tuple[int, tuple[tuple[int, bytes], ...], str]  # table position, checks, MIME type


def _by_first_byte() -> tuple[tuple[int, dict[int, tuple[_Entry, ...]]], ...]:
    """The entries by the offset of their first check and that check's first byte, in table order."""
    index: dict[int, dict[int, list[_Entry]]] = {}
    for position, (checks, mime) in enumerate(SIGNATURES):
        offset, magic = checks[0]
        index.setdefault(offset, {}).setdefault(magic[0], []).append((position, checks, mime))
    return tuple(
        (offset, {byte: tuple(entries) for byte, entries in by_byte.items()}) for offset, by_byte in index.items()
    )


# A miss (what libmagic must then type) costs one lookup per first-check offset, not a table walk.
_BY_FIRST_BYTE: Final = _by_first_byte()


def match_signature(head: bytes | memoryview) -> str | None:
    """The MIME type for a recognised header (the first entry of the table that matches), or None to ask libmagic."""
    if len(head) < MIN_SIGNATURE_BYTES:
        return None
    best: tuple[int, str] | None = None
    for first_offset, by_byte in _BY_FIRST_BYTE:
        for position, checks, mime in by_byte.get(head[first_offset], ()):
            if all(head[offset : offset + len(magic)] == magic for offset, magic in checks):
                if best is None or position < best[0]:
                    best = (position, mime)
                break
    return None if best is None else best[1]
