"""Whether any soft-magic test can print a MIME type on a buffer, decided without libmagic.

With MIME output libmagic prints only MIME types: a test that matches but reaches no record with
one prints nothing (it may stop the pass, but there is nothing left to print). So when no test that
can print a MIME type may match, the soft magic adds nothing and libmagic's answer is that of its
built-in tests alone (`magic_plain`). Two filters decide it, both erring towards "may print":

- the prefilter over the tests that can print a MIME type (a third of the database);
- for the few of those it cannot filter by their first line (a byte above zero, a string less
  than another: true of nearly every buffer), the records on the way to each MIME type, checked
  as necessary conditions: numbers at fixed offsets as libmagic reads them, strings and regexes
  by a literal they need, UTF-16 strings by their first character.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from typing import Final

from rhinobox.ingest.magic_cookies import load_prefilter
from rhinobox.ingest.magic_db import MagicDatabase, MagicRecord
from rhinobox.ingest.magic_fixed import number_condition
from rhinobox.ingest.magic_literals import required_literals
from rhinobox.ingest.magic_prefilter import MagicPrefilter
from rhinobox.ingest.magic_regex import regex_certain, regex_condition

__all__ = ["MimeTestFilter", "load_mime_filter"]

Condition = Callable[[bytes], bool]

# struct magic types, flags and string flags (file.h).
_STRING: Final = 5
_PSTRING: Final = 13
_REGEX: Final = 17
_BESTRING16: Final = 18
_LESTRING16: Final = 19
_SEARCH: Final = 20
_INDIRECT: Final = 41
_USE: Final = 46
_GUID: Final = 49
_INDIR: Final = 0x01
_OFFADD: Final = 0x02
_INDIROFFADD: Final = 0x04
_BINTEST: Final = 0x20
_TEXTTEST: Final = 0x40
_OFFNEGATIVE: Final = 0x80
_STRING_COMPACT: Final = 0x3
_STRING_IGNORE_CASE: Final = 0xC
_REGEX_LINE_COUNT: Final = 0x800
_MOVED: Final = _INDIR | _OFFADD | _INDIROFFADD | _OFFNEGATIVE  # offsets not fixed in the buffer
_GUID_SIZE: Final = 16


@dataclass(frozen=True, slots=True)
class _Gate:
    """A record on the way to a MIME type: its condition, whether it prints one, the records below."""

    condition: Condition | None  # None: may hold (not modelled)
    prints: bool
    below: tuple[_Gate, ...]

    def may_print(self, data: bytes) -> bool:
        if self.condition is not None and not self.condition(data):
            return False
        if self.prints:
            return True
        for gate in self.below:  # noqa: SIM110 (a loop: no generator per call, gates run on every buffer)
            if gate.may_print(data):
                return True
        return False


def _value(record: MagicRecord) -> bytes:
    return record.value[: record.vallen]


def _any_literal(literals: frozenset[bytes], fold: bool) -> Condition:
    if fold:
        lowered = frozenset(literal.lower() for literal in literals)
        return lambda data: any(literal in data.lower() for literal in lowered)
    if len(literals) == 1:
        (only,) = literals
        return lambda data: only in data
    return lambda data: any(literal in data for literal in literals)


def _string_condition(record: MagicRecord) -> Condition | None:
    """A regex as a Python regex over its region, where it translates; else a literal the record
    needs somewhere in the buffer (its offset aside)."""
    flags = record.str_flags
    fold = bool(flags & _STRING_IGNORE_CASE)
    if record.type == _REGEX:
        if not record.flag & _MOVED:
            line_count = bool(flags & _REGEX_LINE_COUNT)
            whole = regex_condition(_value(record), record.offset, record.str_range, line_count, fold)
            if whole is not None:
                return whole
        literals = required_literals(_value(record))
        return _any_literal(frozenset(literals), fold) if literals else None
    value = _value(record)
    if record.type != _SEARCH and record.str_range:
        value = value[: record.str_range]  # libmagic copies no more than that from the buffer
    if flags & _STRING_COMPACT:
        runs = value.split()
        value = max(runs, key=len) if runs else b""
    value = value.rstrip(b"\0")  # zeros may match past the buffer's end
    return _any_literal(frozenset([value]), fold) if value else None


def _utf16_condition(record: MagicRecord) -> Condition | None:
    """A UTF-16 string's first character, read from its low byte (libmagic keeps the low bytes)."""
    first = _value(record)[:1]
    if not first or first in (b"\0", b" ") or record.str_flags:
        return None  # libmagic turns a zero low byte into a blank: either may stand for these
    at = record.offset + (1 if record.type == _BESTRING16 else 0)
    return lambda data: at >= len(data) or data[at : at + 1] == first


def _guid_condition(record: MagicRecord) -> Condition:
    expected, at = record.value[:_GUID_SIZE], record.offset
    return lambda data: len(data) < at + _GUID_SIZE or data[at : at + _GUID_SIZE] == expected


def _negated_regex(record: MagicRecord) -> Condition | None:
    """`!` on a regex: the record matches only if libmagic finds no match of it."""
    line_count = bool(record.str_flags & _REGEX_LINE_COUNT)
    fold = bool(record.str_flags & _STRING_IGNORE_CASE)
    certain = regex_certain(_value(record), record.offset, record.str_range, line_count, fold)
    return None if certain is None else lambda data: not certain(data)


def _condition(record: MagicRecord) -> Condition | None:
    """A necessary condition for `record` to match, or None when none is modelled."""
    if record.type in (_STRING, _PSTRING, _SEARCH, _REGEX):
        if record.reln == ord("!") and record.type == _REGEX and not record.flag & _MOVED:
            return _negated_regex(record)
        return _string_condition(record) if record.reln == ord("=") else None
    if record.flag & _MOVED:
        return None
    if record.type in (_BESTRING16, _LESTRING16):
        return _utf16_condition(record) if record.reln == ord("=") else None
    if record.type == _GUID:
        return _guid_condition(record) if record.reln == ord("=") else None
    return number_condition(record)


def _prints(record: MagicRecord, database: MagicDatabase) -> bool:
    if record.mime or record.type == _INDIRECT:
        return True
    return record.type == _USE and database.name_can_print(record.value.split(b"\0", 1)[0])


def _gates(records: Sequence[MagicRecord], database: MagicDatabase) -> _Gate | None:
    """The tree of a test's records that lead to a MIME type (None: its levels are not nested one by one)."""
    if any(later.cont_level > earlier.cont_level + 1 for earlier, later in pairwise(records)):
        return None
    nodes: list[tuple[MagicRecord, list[_Gate]]] = []  # the open records, one per level

    def close(level: int) -> None:
        while len(nodes) > level:
            record, below = nodes.pop()
            if _prints(record, database) or below:
                gate = _Gate(_condition(record), _prints(record, database), tuple(below))
                if nodes:
                    nodes[-1][1].append(gate)
                else:
                    finished.append(gate)

    finished: list[_Gate] = []
    for record in records:
        close(record.cont_level)
        nodes.append((record, []))
    close(0)
    return finished[0] if finished else _Gate(lambda data: False, False, ())


class MimeTestFilter:
    """Whether a soft-magic test that can print a MIME type may match a buffer."""

    def __init__(self, database: MagicDatabase) -> None:
        self._prefilter = MagicPrefilter(database, only=database.mime_capable, regexes=True)
        self._text_only = frozenset(
            test.index for test in database.tests if test.record.flag & (_BINTEST | _TEXTTEST) == _TEXTTEST
        )
        self._gates: dict[int, _Gate] = {}
        for index in sorted(database.mime_capable):
            gate = _gates(database.records(index), database)
            if gate is not None:
                self._gates[index] = gate

    def may_print(self, data: bytes, text: bool) -> bool:
        """Whether a test may print a MIME type on `data`; `text`: libmagic's text pass reads `data`
        as it is (ASCII or UTF-8), else it does not run at all (no text, trailing zeros aside)."""
        for index in self._prefilter.candidates(data, text):
            if not text and index in self._text_only:
                continue
            gate = self._gates.get(index)
            if gate is None or gate.may_print(data):
                return True
        return False


@cache
def load_mime_filter() -> MimeTestFilter | None:
    """The filter over the machine's database (built once per process), or None without a prefilter."""
    loaded = load_prefilter()
    return None if loaded is None else MimeTestFilter(loaded[0])
