"""A libmagic `regex` record as a Python regex over a window that holds its search region.

libmagic compiles these as POSIX extended regexes with REG_NEWLINE and runs them over a region of
the buffer (from the record's offset, a number of bytes or of lines, 80 bytes a line, at most
FILE_REGEX_MAX). Patterns in a small subset of the syntax (literals, plain bracket expressions, `.`,
`^`, `$`, groups, alternation, counted and uncounted repeats) mean the same in both engines; they are
translated, the rest is not. The translation errs one way only: it may match where libmagic does
not (a wider window; `$` also before a carriage return or a NUL, where libmagic's region may end),
never the other way round. For `!` (a record that matches when its regex does not), the other
way is needed: `regex_certain` finds a match only where libmagic surely finds one too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["CertainTest", "Re2Search", "RegexTest", "re2_pattern", "regex_certain", "regex_condition"]

_REGEX_MAX: Final = 8192  # FILE_REGEX_MAX: libmagic searches no further
_LINE_BYTES: Final = 80  # a `regex/Nl` region is at most N * 80 bytes
_SELF_ESCAPES: Final = frozenset(b".[]()*+?{}|^$\\/-")
_COUNT: Final = re.compile(rb"\{[0-9]+(,[0-9]*)?\}")
_END_OF_LINE: Final = rb"(?:$|(?=[\r\x00]))"
# A trailing `$` for RE2, which has no lookahead: consuming the carriage return or NUL finds a match
# exactly where looking ahead at it does, since nothing follows.
_RE2_END_OF_LINE: Final = rb"(?:$|[\r\x00])"


class _Untranslatable(Exception):
    """Syntax outside the subset both engines read the same way."""


def _other_case(byte: int) -> int:
    """An ASCII letter's other case (bytes.swapcase), any other byte itself."""
    return bytes([byte]).swapcase()[0]


def _bracket(pattern: bytes, start: int, fold: bool = False) -> tuple[bytes, int]:
    """A plain bracket expression at `start` as a class (`fold`: with both cases of its ASCII
    letters, as IGNORECASE reads bytes), and the index past it."""
    i = start + 1
    negated = pattern[i : i + 1] == b"^"
    i += negated
    members = bytearray()
    first = True
    while i < len(pattern) and (pattern[i] != ord("]") or first):
        if pattern[i] in b"[\\":
            raise _Untranslatable  # [:class:], [.coll.], [=equiv=]; a backslash is literal in POSIX
        if i + 2 < len(pattern) and pattern[i + 1] == ord("-") and pattern[i + 2] != ord("]"):
            if pattern[i] > pattern[i + 2]:
                raise _Untranslatable
            members.extend(range(pattern[i], pattern[i + 2] + 1))
            i += 3
        else:
            members.append(pattern[i])
            i += 1
        first = False
    if i >= len(pattern):
        raise _Untranslatable
    if fold:
        members.extend([_other_case(byte) for byte in members])
    if negated:
        members.append(ord("\n"))  # under REG_NEWLINE a non-matching list never matches a newline
    body = b"".join(b"\\x%02x" % byte for byte in sorted(set(members)))
    return (b"[^" if negated else b"[") + body + b"]", i + 1


def translate(pattern: bytes, end_of_line: bytes = _END_OF_LINE, fold: bool = False) -> bytes:
    """The Python regex (bytes, to compile with MULTILINE) for a POSIX ERE in the common subset;
    `$` becomes `end_of_line`. `fold`: ASCII letters match either case (the syntax RE2 reads too)."""
    pattern = pattern.split(b"\0", 1)[0]  # regcomp sees a C string
    out = bytearray()
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == ord("\\"):
            if i + 1 >= len(pattern) or pattern[i + 1] not in _SELF_ESCAPES:
                raise _Untranslatable  # \< \> \w \b ...: GNU extensions
            out += _literal(pattern[i + 1], fold)
            i += 2
        elif char == ord("["):
            translated, i = _bracket(pattern, i, fold)
            out += translated
        elif char == ord("{"):
            count = _COUNT.match(pattern, i)
            if count is None:
                raise _Untranslatable
            out += count.group()
            i = count.end()
        elif char == ord("$"):
            out += end_of_line
            i += 1
        elif char == ord("."):
            out += rb"[^\n]"
            i += 1
        elif char in b"()|*+?^":
            out.append(char)
            i += 1
        else:
            out += _literal(char, fold)
            i += 1
    return bytes(out)


def _literal(byte: int, fold: bool) -> bytes:
    other = _other_case(byte) if fold else byte
    return b"\\x%02x" % byte if other == byte else b"[\\x%02x\\x%02x]" % (byte, other)


def _without_end(pattern: bytes, end: bytes) -> bytes | None:
    """The C string of `pattern` less a trailing `end` (not escaped); None if a `$` is left in it."""
    pattern = pattern.split(b"\0", 1)[0]
    if pattern.endswith(end) and not pattern.endswith(b"\\" + end):
        pattern = pattern[: -len(end)]
    return None if b"$" in pattern else pattern


def _region_search(
    pattern: bytes, str_range: int, line_count: bool, fold: bool
) -> tuple[Callable[[bytes, int], bool], int] | None:
    """The translated search and the most bytes libmagic's region spans (None: not translatable)."""
    try:
        search = _search(pattern, re.IGNORECASE if fold else 0)
    except (_Untranslatable, re.error):
        return None
    span = str_range * _LINE_BYTES if line_count else str_range
    return search, min(span, _REGEX_MAX) if span else _REGEX_MAX


def re2_pattern(pattern: bytes) -> bytes | None:
    """An RE2 pattern (LATIN1) that matches wherever the POSIX ERE may match in a buffer searched
    from its start; None when not translatable. A trailing `$` is dropped (what precedes it must
    match anyway); one elsewhere is not read."""
    stripped = _without_end(pattern, b"$")
    if stripped is None:
        return None
    try:
        return b"(?m:" + translate(stripped) + b")"
    except _Untranslatable:
        return None


def _search(pattern: bytes, flags: int) -> Callable[[bytes, int], bool]:
    """`search(buffer, end)`: whether the translated `pattern` matches in `buffer[:end]`.

    A pattern that starts with its only `^` is searched as a match at the start or after a newline:
    Python's `re` finds a leading newline fast, while it tries a multi-line `^` at every position.
    """
    translated = translate(pattern)
    anchors = translated.count(b"^") - translated.count(b"[^")
    if translated.startswith(b"^") and anchors == 1 and b"|" not in pattern:
        at_start = re.compile(translated[1:], re.MULTILINE | flags)
        after_newline = re.compile(b"\n" + translated[1:], re.MULTILINE | flags)
        return lambda data, end: bool(at_start.match(data, 0, end) or after_newline.search(data, 0, end))
    compiled = re.compile(translated, re.MULTILINE | flags)
    return lambda data, end: compiled.search(data, 0, end) is not None


@dataclass(frozen=True, slots=True)
class Re2Search:
    """A translated search as RE2 reads it: `pattern` anywhere in the region, or (`line_start`) at
    its start or right after a newline, which lets RE2 skip to each newline (as `_search` does)."""

    pattern: bytes
    line_start: bool


@dataclass(frozen=True, slots=True)
class RegexTest:
    """Whether a buffer may match a `regex` record at a fixed offset: the translated search over its
    region, and the same search for RE2 (the compiled filter's), where one can be written."""

    holds: Callable[[bytes], bool]
    offset: int
    span: int  # the region's most bytes
    re2: Re2Search | None  # the same search over data[offset:offset + span] with RE2 (LATIN1)

    def may_match(self, data: bytes) -> bool:
        return self.holds(data)


def _re2_search(pattern: bytes, fold: bool) -> Re2Search | None:
    """`_search` for RE2 (no lookahead, no IGNORECASE: RE2 folds Latin-1 letters too); None where
    RE2 cannot say the same (a `$` before the end)."""
    stripped = _without_end(pattern, b"$")
    if stripped is None:
        return None
    end = b"" if stripped == pattern.split(b"\0", 1)[0] else _RE2_END_OF_LINE
    try:
        translated = translate(stripped, fold=fold) + end
    except _Untranslatable:
        return None
    anchors = translated.count(b"^") - translated.count(b"[^")
    if translated.startswith(b"^") and anchors == 1 and b"|" not in pattern:
        return Re2Search(b"(?m:" + translated[1:] + b")", line_start=True)
    return Re2Search(b"(?m:" + translated + b")", line_start=False)


def regex_condition(pattern: bytes, offset: int, str_range: int, line_count: bool, fold: bool) -> RegexTest | None:
    """Whether a buffer may match a `regex` record at a fixed `offset` (None: not translatable)."""
    found = _region_search(pattern, str_range, line_count, fold)
    if found is None:
        return None
    search, span = found

    def holds(data: bytes) -> bool:
        # Sliced, not searched from `offset`: libmagic's `^` matches where its region starts.
        return search(data[offset : offset + span] if offset else data, span)

    return RegexTest(holds, offset, span, _re2_search(pattern, fold))


@dataclass(frozen=True, slots=True)
class CertainTest:
    """Whether libmagic surely finds a match of a `regex` record at a fixed offset (`regex_certain`),
    with the same search for RE2 where one can be written."""

    holds: Callable[[bytes], bool]
    offset: int
    span: int
    lines: int  # the region's line count, 0: counted in bytes
    re2: Re2Search | None


def regex_certain(pattern: bytes, offset: int, str_range: int, line_count: bool, fold: bool) -> CertainTest | None:
    """Whether libmagic surely finds a match of a `regex` record at a fixed `offset` (None: cannot tell).

    Searched over a part of libmagic's region only: up to the first NUL (regexec stops there),
    short of the region's last byte (libmagic cuts it off), and for a line count up to the last
    newline libmagic surely counts (its loop skips a byte after each, so it may count fewer).
    A trailing `.*$` is dropped (under REG_NEWLINE it matches at any point of a line); a pattern with
    another `$` is not read (where the part ends, `$` would match where libmagic's region goes on).
    """
    stripped = _without_end(pattern, b".*$")
    found = None if stripped is None else _region_search(stripped, str_range, line_count, fold)
    if found is None:
        return None
    search, span = found
    lines = str_range if line_count else 0

    def holds(data: bytes) -> bool:
        end = min(len(data), offset + span)  # libmagic's region ends here at most
        stop = end - 1  # and it drops the region's last byte
        first = data.find(b"\n", offset, stop)
        if first > offset and data.find(b"\0", offset, first) < 0 and search(data[offset:first], first - offset):
            return True  # in the first line, which libmagic's region always holds
        if lines:
            newlines = data.count(b"\n", offset, stop)
            if not newlines and data.find(b"\r", offset, end) >= 0:
                return False  # lines counted by carriage returns: not read here
            if newlines:
                # It ends at one of the first `lines` newlines or later, never before the last of those.
                kept = min(lines, newlines)
                parts = data[offset:stop].split(b"\n", kept)[:kept]
                stop = offset + sum(map(len, parts)) + kept - 1
        nul = data.find(b"\0", offset, stop)
        if nul >= 0:
            stop = nul  # regexec stops at a NUL
        if stop <= offset:
            return False
        return search(data[offset:stop] if offset else data, stop - offset)

    return CertainTest(holds, offset, span, lines, None if stripped is None else _re2_search(stripped, fold))
