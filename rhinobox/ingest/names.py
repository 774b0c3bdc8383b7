"""Client-supplied names and hints, made safe to store and show. They are metadata, never paths."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["MAX_HINT_SEGMENTS", "MAX_NAME_CHARS", "clean_filename", "clean_hint", "extension_of"]

MAX_NAME_CHARS: Final = 255
MAX_HINT_SEGMENTS: Final = 4
MAX_HINT_SEGMENT_CHARS: Final = 64
MAX_EXTENSION_CHARS: Final = 16
UNNAMED: Final = "unnamed"
_HINT_UNSAFE: Final = re.compile(r"[^a-z0-9._-]+")
_PLAIN_ASCII: Final = re.compile(rb"[\x20-\x7e]*")
# Control characters, lone surrogates, line/paragraph separators, and the bidi controls that can make
# a displayed name lie about its extension ("gpj.exe" shown as "exe.jpg").
_DROPPED: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def clean_filename(raw: bytes | str) -> str:
    """A displayable name: valid UTF-8, no control characters, at most MAX_NAME_CHARS.

    Separators and `..` are kept as text (a client may send a relative path as a name); the name
    never reaches the filesystem, so they are harmless. Truncation keeps the extension.
    """
    if isinstance(raw, bytes) and _PLAIN_ASCII.fullmatch(raw) and len(raw) <= MAX_NAME_CHARS:
        return raw.decode("ascii").strip() or UNNAMED  # the common case, without the per-character walk
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED and ch not in _BIDI_CONTROLS)
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        return UNNAMED
    if len(text) > MAX_NAME_CHARS:
        ext = extension_of(text)
        text = text[: MAX_NAME_CHARS - len(ext)] + ext
    return text


def extension_of(name: str) -> str:
    """The lowercase extension of the last path component (`.tar.gz` gives `.gz`), or ''."""
    base = re.split(r"[\\/]", name)[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or not ext or len(ext) > MAX_EXTENSION_CHARS or not ext.isalnum():
        return ""
    return "." + ext.lower()


def clean_hint(raw: str) -> str | None:
    """A category hint as safe folder-like segments (`Holiday Pics/2024` gives `holiday-pics/2024`)."""
    segments = []
    for part in re.split(r"[\\/]+", raw):
        segment = _HINT_UNSAFE.sub("-", part.strip().lower().replace(" ", "-")).strip("-.")
        if segment:
            segments.append(segment[:MAX_HINT_SEGMENT_CHARS])
    return "/".join(segments[:MAX_HINT_SEGMENTS]) or None
