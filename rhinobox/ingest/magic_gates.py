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
from rhinobox.ingest.magic_fixed import NumberCondition, number_condition
from rhinobox.ingest.magic_literals import required_literals
from rhinobox.ingest.magic_prefilter import MagicPrefilter
from rhinobox.ingest.magic_regex import CertainTest, RegexTest, regex_certain, regex_condition

__all__ = [
    "NEVER",
    "Gate",
    "GuidTest",
    "LiteralTest",
    "MimeTestFilter",
    "ModelledTest",
    "NegatedRegexTest",
    "Utf16Test",
    "load_mime_filter",
]

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
class LiteralTest:
    """One of some literals occurs in the buffer (lowered, and looked for in the lowered buffer, when folded)."""

    literals: tuple[bytes, ...]
    fold: bool

    def may_match(self, data: bytes) -> bool:
        if self.fold:
            data = data.lower()
        for literal in self.literals:  # noqa: SIM110 (a loop: no generator per call)
            if literal in data:
                return True
        return False


@dataclass(frozen=True, slots=True)
class Utf16Test:
    """A UTF-16 string's first character, read from its low byte (libmagic keeps the low bytes)."""

    at: int
    first: bytes

    def may_match(self, data: bytes) -> bool:
        return self.at >= len(data) or data[self.at : self.at + 1] == self.first


@dataclass(frozen=True, slots=True)
class GuidTest:
    """A GUID's 16 bytes at a fixed offset (a shorter buffer: may match)."""

    at: int
    expected: bytes

    def may_match(self, data: bytes) -> bool:
        at = self.at
        return len(data) < at + _GUID_SIZE or data[at : at + _GUID_SIZE] == self.expected


# The conditions the gates model, as data the compiled filter reads too.
@dataclass(frozen=True, slots=True)
class NegatedRegexTest:
    """`!` on a regex: the record matches only if libmagic finds no match of it."""

    certain: CertainTest

    def may_match(self, data: bytes) -> bool:
        return not self.certain.holds(data)


ModelledTest = NumberCondition | LiteralTest | Utf16Test | GuidTest | RegexTest | NegatedRegexTest


@dataclass(frozen=True, slots=True)
class Gate:
    """A record on the way to a MIME type: its condition, whether it prints one, the records below."""

    condition: Condition | None  # None: may hold (not modelled); else `modelled.may_match`, bound once
    prints: bool
    below: tuple[Gate, ...]
    modelled: ModelledTest | None = None  # what `condition` checks, as data

    def may_print(self, data: bytes) -> bool:
        if self.condition is not None and not self.condition(data):
            return False
        if self.prints:
            return True
        for gate in self.below:  # noqa: SIM110 (a loop: no generator per call, gates run on every buffer)
            if gate.may_print(data):
                return True
        return False


# The gate of a test whose records never lead to a MIME type.
NEVER: Final = Gate(lambda data: False, False, ())


def _value(record: MagicRecord) -> bytes:
    return record.value[: record.vallen]


def _any_literal(literals: frozenset[bytes], fold: bool) -> LiteralTest:
    return LiteralTest(tuple(sorted(literal.lower() for literal in literals) if fold else sorted(literals)), fold)


def _string_condition(record: MagicRecord) -> RegexTest | LiteralTest | None:
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


def _utf16_condition(record: MagicRecord) -> Utf16Test | None:
    first = _value(record)[:1]
    if not first or first in (b"\0", b" ") or record.str_flags:
        return None  # libmagic turns a zero low byte into a blank: either may stand for these
    return Utf16Test(record.offset + (1 if record.type == _BESTRING16 else 0), first)


def _guid_condition(record: MagicRecord) -> GuidTest:
    return GuidTest(record.offset, record.value[:_GUID_SIZE])


def _negated_regex(record: MagicRecord) -> NegatedRegexTest | None:
    line_count = bool(record.str_flags & _REGEX_LINE_COUNT)
    fold = bool(record.str_flags & _STRING_IGNORE_CASE)
    certain = regex_certain(_value(record), record.offset, record.str_range, line_count, fold)
    return None if certain is None else NegatedRegexTest(certain)


def _condition(record: MagicRecord) -> ModelledTest | None:
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


def _gate(record: MagicRecord, database: MagicDatabase, below: tuple[Gate, ...]) -> Gate:
    found = _condition(record)
    return Gate(None if found is None else found.may_match, _prints(record, database), below, found)


def _gates(records: Sequence[MagicRecord], database: MagicDatabase) -> Gate | None:
    """The tree of a test's records that lead to a MIME type (None: its levels are not nested one by one)."""
    if any(later.cont_level > earlier.cont_level + 1 for earlier, later in pairwise(records)):
        return None
    nodes: list[tuple[MagicRecord, list[Gate]]] = []  # the open records, one per level

    def close(level: int) -> None:
        while len(nodes) > level:
            record, below = nodes.pop()
            if _prints(record, database) or below:
                gate = _gate(record, database, tuple(below))
                if nodes:
                    nodes[-1][1].append(gate)
                else:
                    finished.append(gate)

    finished: list[Gate] = []
    for record in records:
        close(record.cont_level)
        nodes.append((record, []))
    close(0)
    return finished[0] if finished else NEVER


class MimeTestFilter:
    """Whether a soft-magic test that can print a MIME type may match a buffer."""

    def __init__(self, database: MagicDatabase) -> None:
        self.prefilter = MagicPrefilter(database, only=database.mime_capable, regexes=True)
        self.text_only = frozenset(
            test.index for test in database.tests if test.record.flag & (_BINTEST | _TEXTTEST) == _TEXTTEST
        )
        self.gates: dict[int, Gate] = {}  # by test; a test without one may print whenever it is a candidate
        for index in sorted(database.mime_capable):
            gate = _gates(database.records(index), database)
            if gate is not None:
                self.gates[index] = gate

    def may_print(self, data: bytes, text: bool) -> bool:
        """Whether a test may print a MIME type on `data`; `text`: libmagic's text pass reads `data`
        as it is (ASCII or UTF-8), else it does not run at all (no text, trailing zeros aside)."""
        for index in self.prefilter.candidates(data, text):
            if not text and index in self.text_only:
                continue
            gate = self.gates.get(index)
            if gate is None or gate.may_print(data):
                return True
        return False

    def gates_may_print(self, data: bytes, tests: Sequence[int]) -> bool:
        """Whether the gate of one of `tests` may print a MIME type on `data` (they are candidates already)."""
        for index in tests:
            gate = self.gates.get(index)
            if gate is None or gate.may_print(data):
                return True
        return False


@cache
def load_mime_filter() -> MimeTestFilter | None:
    """The filter over the machine's database (built once per process), or None without a prefilter."""
    loaded = load_prefilter()
    return None if loaded is None else MimeTestFilter(loaded[0])
