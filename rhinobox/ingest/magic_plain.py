"""libmagic's answer for a buffer on which no soft-magic test can print a MIME type, when it is plain.

Its built-in tests then decide alone (funcs.c `file_buffer`, file 5.44): tar, JSON, CSV, CDF, then
the text encoding; what is left is "text/plain" (text) or "application/octet-stream". This module
answers the two common cases in microseconds, each built-in test reduced to a check that errs one
way only (towards "ask libmagic"): ASCII or UTF-8 text that is neither JSON, CSV nor tar, and bytes
with a NUL inside that are neither tar, JSON nor a compound document. Anything else is None.
`magic_plain.cc` answers the same in the compiled filter's one-call first look (`FirstLook`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = ["OCTET_STREAM", "PLAIN_TEXT", "FirstLook", "plain_answer"]

PLAIN_TEXT: Final = "text/plain"
OCTET_STREAM: Final = "application/octet-stream"

# encoding.c `text_chars`: the bytes of plain ASCII text (BEL to CR, ESC, printable); the others
# make libmagic's ASCII and UTF-8 checks fail.
_ASCII_TEXT: Final = bytes([*range(7, 14), 27, *range(32, 127)])
_NOT_ASCII_TEXT: Final = bytes(sorted(set(range(128)) - set(_ASCII_TEXT)))
# Where libmagic reads text in a converted copy (BOMs, UTF-7) or as a compound document (cdf.c).
_OTHER_STARTS: Final = (
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\x00\x00\xfe\xff",
    b"+/v",
    bytes.fromhex("d0cf11e0a1b11ae1"),
)
_JSON_SPACE: Final = b" \t\n\r"  # is_json.c `json_isspace`
_CSV_LINES: Final = 10  # is_csv.c CSV_LINES
_TAR_BLOCK: Final = 512
_TAR_CHECKSUM: Final = slice(148, 156)
_C_SPACE: Final = b" \t\n\v\f\r"


class FirstLook(IntEnum):
    """What the gates' filter and `plain_answer` leave of a document (magic_native.cc's numbers)."""

    MAY_PRINT = 0  # a soft-magic test may print, or libmagic's text tests read a converted copy
    PLAIN_TEXT = 1
    PLAIN_BYTES = 2
    BUILTIN = 3  # no soft-magic test prints; libmagic's built-in tests must tell

    @property
    def mime(self) -> str | None:
        """The answer when it is plain, else None."""
        return _PLAIN_MIMES.get(self)


_PLAIN_MIMES: Final = {FirstLook.PLAIN_TEXT: PLAIN_TEXT, FirstLook.PLAIN_BYTES: OCTET_STREAM}


def plain_answer(data: bytes) -> str | None:
    """libmagic's answer for `data` if no soft-magic test prints a MIME type on it and it is plain
    text or plain bytes; None when libmagic must tell (short, JSON-like, CSV-like, tar-like, other encodings)."""
    if len(data) < 2 or data.startswith(_OTHER_STARTS) or _may_be_tar(data) or _may_be_json(data):
        return None
    if b"\0" in data:
        # Not text in any encoding libmagic tries; its text check runs again without trailing NULs.
        return OCTET_STREAM if b"\0" in data.rstrip(b"\0") else None
    if not _is_text(data) or _may_be_csv(data):
        return None
    return PLAIN_TEXT


def _is_text(data: bytes) -> bool:
    """ASCII or UTF-8 text as libmagic's encoding check sees it (no control byte but BEL to CR and ESC)."""
    if data.translate(None, _NOT_ASCII_TEXT) != data:
        return False
    if data.isascii():
        return True
    try:
        data.decode("utf-8")  # stricter than libmagic's check, never looser
    except UnicodeDecodeError:
        return False
    return True


def _may_be_json(data: bytes) -> bool:
    """is_json.c answers JSON only for an object or an array of more than one value at the top."""
    return data.lstrip(_JSON_SPACE)[:1] in (b"{", b"[")


def _may_be_tar(data: bytes) -> bool:
    """is_tar.c: the header's checksum field, read as octal, equals the sum of its bytes."""
    if len(data) < _TAR_BLOCK:
        return False
    recorded = _from_octal(data, _TAR_CHECKSUM.start, _TAR_CHECKSUM.stop - _TAR_CHECKSUM.start)
    if recorded < 0:
        return False
    header = data[:_TAR_BLOCK]
    total = sum(header) - sum(header[_TAR_CHECKSUM]) + ord(" ") * (_TAR_CHECKSUM.stop - _TAR_CHECKSUM.start)
    return total == recorded


def _from_octal(data: bytes, at: int, digits: int) -> int:
    """is_tar.c `from_oct`, reading past the field as it does when the field is all blanks."""
    while at < len(data) and data[at] in _C_SPACE:
        at += 1
        if digits == 0:
            return -1
        digits -= 1
    value = 0
    while digits > 0 and at < len(data) and 0x30 <= data[at] <= 0x37:
        value = (value << 3) | (data[at] - 0x30)
        at += 1
        digits -= 1
    if digits > 0 and at < len(data) and data[at] and data[at] not in _C_SPACE:
        return -1
    return value


def _may_be_csv(data: bytes) -> bool:
    """is_csv.c `csv_parse` on text without a quote before its last counted line; any quote: maybe."""
    lines = data.split(b"\n", _CSV_LINES)
    counted = lines[:-1]  # the part after the last newline (or the tenth) is never counted
    if data.find(b'"', 0, len(data) - len(lines[-1])) >= 0:
        return True
    fields = 0
    for number, line in enumerate(counted, start=1):
        commas = line.count(b",")
        if number == _CSV_LINES:
            return fields != 0 and fields == commas
        if fields == 0:
            if commas == 0:
                return False
            fields = commas
        elif fields != commas:
            return False
    return fields != 0 and len(counted) > 2
