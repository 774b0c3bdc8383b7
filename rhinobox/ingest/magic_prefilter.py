"""Which of libmagic's top-level soft-magic tests could match a buffer, decided in microseconds.

libmagic tries every top-level test on every buffer (about 3,500 on Debian 12), which is 0.2 ms
for binary content and over 1 ms for 4 KiB of text, and almost all of them fail at once. Here
each test is reduced to a necessary condition: bytes at a fixed offset, or literals one of which
must occur in a window; one RE2 set (a DFA over all of them, one pass) checks them together, a
short Python loop the few it cannot express (far offsets, strings ending in zeros, which match
past the buffer's end). One RE2 call per buffer: each call lets go of the GIL, and a worker that
lets go of it while the event loop waits for it pays two thread switches (more than the scan).
Tests with no such condition (relations other than equality, indirect offsets, DER...) are
always candidates. The conditions err one way only, towards "may match", so libmagic run on the
candidates alone gives the answer it gives with the whole database.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable
from operator import getitem, itemgetter
from typing import Final

import re2

from rhinobox.ingest.magic_db import MagicDatabase, MagicRecord
from rhinobox.ingest.magic_fixed import NUMBERS, FixedTest, RelationTest, number_test, relation_test
from rhinobox.ingest.magic_literals import required_literals
from rhinobox.ingest.magic_regex import re2_pattern

__all__ = ["MagicPrefilter", "SetPatterns", "split_patterns"]

# struct magic flag bits and types (file.h).
_INDIR: Final = 0x01
_BINTEST: Final = 0x20
_TEXTTEST: Final = 0x40
_OFFNEGATIVE: Final = 0x80
_STRING: Final = 5
_REGEX: Final = 17
_SEARCH: Final = 20
_STRING_COMPACT: Final = 0x3  # W and w: blanks in the pattern match runs of blanks
_STRING_IGNORE_CASE: Final = 0xC  # c and C
_WHITESPACE: Final = b" \t\n\r\f\v"
# Fixed bytes further in than this are checked in Python: a DFA skipping far ahead grows large.
_SET_MAX_OFFSET: Final = 64
# A pass with no more literals than this to find anywhere looks for them with `bytes.find` (memmem),
# which beats one more RE2 pass over the whole buffer; more go into an RE2 set.
_FIND_AT_MOST: Final = 16
# Buffer lengths at which the Python-checked offsets have a ready itemgetter (the rest are read one by one).
_READ_BOUNDS: Final = tuple(1 << shift for shift in range(4, 31))
_ANCHOR: Final = rb"\A"


def _options() -> re2.Options:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1  # bytes as bytes, not UTF-8
    options.never_capture = True
    options.dot_nl = True
    options.max_mem = 64 << 20
    return options


def _fixed_pattern(test: FixedTest) -> bytes | None:
    """The test as an RE2 pattern, or None when the Python loop must check it.

    A string ending in zeros may match past the buffer's end (zero padding), which no pattern
    can say; a number past the end never matches (libmagic's OFFSET_OOB), so a pattern may.
    """
    if test.offset > _SET_MAX_OFFSET or (test.padded and test.expected.endswith(b"\0")):
        return None
    skip = rb"\A(?s:.{%d})" % test.offset
    if test.mask is None:
        literal: bytes = re2.escape(test.expected)
        return skip + (b"(?i:" + literal + b")" if test.fold else literal)
    mask_bytes = test.mask.to_bytes(len(test.expected), "big")
    classes = [_masked_class(byte, mask) for byte, mask in zip(test.expected, mask_bytes, strict=True)]
    if any(cls is None for cls in classes):
        return None
    return skip + b"".join(cls for cls in classes if cls is not None)


def _masked_class(expected: int, mask: int) -> bytes | None:
    """An RE2 class of the bytes `b` with `b & mask == expected` (None if no byte has it)."""
    if mask == 0xFF:
        return b"\\x%02x" % expected
    values = [value for value in range(256) if value & mask == expected]
    if not values:
        return None
    return b"[" + b"".join(b"\\x%02x" % value for value in values) + b"]"


def _re2_accepts(pattern: bytes) -> bool:
    try:
        re2.compile(pattern, _options())
    except re2.error:
        return False
    return True


def _compiled(patterns: dict[bytes, list[int]], anchored: bool) -> tuple[re2.Set, tuple[tuple[int, ...], ...]]:
    """One RE2 set of `patterns`, and for each pattern (by its number in the set) the tests it stands for."""
    matcher = re2.Set.MatchSet(_options()) if anchored else re2.Set.SearchSet(_options())
    tests: list[tuple[int, ...]] = []
    for pattern, indices in patterns.items():
        if matcher.Add(pattern) != len(tests):
            raise ValueError(f"RE2 refused {pattern!r}")
        tests.append(tuple(indices))
    matcher.Compile()
    return matcher, tuple(tests)


_MatchSet = tuple[re2.Set, tuple[tuple[int, ...], ...]]


# The patterns of one RE2 set, each with the tests it stands for, and whether the set is anchored at the start.
SetPatterns = tuple[dict[bytes, list[int]], bool]


def split_patterns(patterns: dict[bytes, list[int]]) -> tuple[SetPatterns, ...]:
    """Two sets: patterns tied to the start stop the scan once all of them have failed (a few bytes
    in); the others need the whole buffer."""
    anchored = {p[len(_ANCHOR) :]: tests for p, tests in patterns.items() if p.startswith(_ANCHOR)}
    anywhere = {p: tests for p, tests in patterns.items() if not p.startswith(_ANCHOR)}
    return tuple((group, is_anchored) for group, is_anchored in ((anchored, True), (anywhere, False)) if group)


def _merged_patterns(groups: tuple[_TestGroup, ...]) -> SetPatterns:
    """One search set of every pattern of `groups` (anchored ones keep their \\A)."""
    patterns: dict[bytes, list[int]] = defaultdict(list)
    for group in groups:
        for pattern, tests in group.patterns.items():
            patterns[pattern].extend(tests)
    return dict(patterns), False


def _add_matches(matched: _MatchSet, data: bytes, found: set[int]) -> None:
    matcher, tests = matched
    for pattern in matcher.Match(data) or ():
        found.update(tests[pattern])


def _skip(lowest: int, highest: int | None) -> bytes:
    """An RE2 prefix: a match starts between `lowest` and `highest` (None: anywhere from `lowest`).

    Only a near, bounded window is anchored; any other is widened to "anywhere" (a superset), since
    an anchored prefix with no upper bound keeps the whole anchored set scanning to the buffer's end.
    """
    if highest is not None and highest <= _SET_MAX_OFFSET:
        return rb"\A(?s:.{%d,%d})" % (lowest, highest)
    return b""


class _TestGroup:
    """The conditions of one pass's tests (libmagic's binary pass, or its text pass)."""

    def __init__(self, searches: bool) -> None:
        """`searches`: this pass's tests are mostly searches (text), so its set scans whole buffers."""
        self.searches = searches
        self._slow: dict[int, dict[int, list[FixedTest]]] = defaultdict(lambda: defaultdict(list))
        self._patterns: dict[bytes, list[int]] = defaultdict(list)
        self._sets: tuple[_MatchSet, ...] = ()
        # (literal, folded, start, end): the tests of a literal to find in data[start:end] (end None: to the end).
        self._anywhere: dict[tuple[bytes, bool, int, int | None], list[int]] = defaultdict(list)
        self._found_by_find: tuple[tuple[bytes, bool, int, int | None, tuple[int, ...]], ...] = ()
        # The Python-checked tests: the bytes at their offsets within the buffer are read by an
        # itemgetter, then each offset's 256-entry table gives the tests that byte leaves standing.
        # Past the buffer's end libmagic compares strings against zeros: the tests standing on a
        # zero there are precomputed.
        self._offsets: tuple[int, ...] = ()
        self._tables: tuple[tuple[tuple[_Standing, ...] | None, ...], ...] = ()
        self._readers: dict[int, Callable[[bytes], tuple[int, ...]]] = {}  # by how many offsets they read
        self._standing_past: tuple[tuple[_Standing, ...], ...] = ()  # [k]: on zeros at offsets[k:]
        self._relations: list[RelationTest] = []
        self._table_tests: list[FixedTest] = []
        self.set_patterns: tuple[SetPatterns, ...] = ()  # what the RE2 sets hold, once frozen
        self.indices: list[int] = []

    def add_relation(self, test: RelationTest) -> None:
        self.indices.append(test.index)
        self._relations.append(test)

    def add_fixed(self, test: FixedTest) -> None:
        self.indices.append(test.index)
        pattern = _fixed_pattern(test)
        if pattern is not None:
            self._patterns[pattern].append(test.index)
            return
        self._table_tests.append(test)
        table = self._slow[test.offset]
        for value in test.first_bytes():
            table[value].append(test)

    def add_literals(
        self, index: int, literals: frozenset[bytes], fold: bool, lowest: int, highest: int | None
    ) -> None:
        """One of `literals` occurs in a match, starting between `lowest` and `highest`."""
        self.indices.append(index)
        skip = _skip(lowest, highest)
        if not skip:
            for literal in literals:
                end = None if highest is None else highest + len(literal)
                self._anywhere[(literal.lower() if fold else literal, fold, lowest, end)].append(index)
            return
        alternatives = b"|".join(re2.escape(literal) for literal in sorted(literals))
        self._patterns[skip + (b"(?i:" if fold else b"(?:") + alternatives + b")"].append(index)

    def add_pattern(self, index: int, pattern: bytes) -> None:
        """An RE2 pattern every match of the test matches (searched anywhere in the buffer)."""
        self.indices.append(index)
        self._patterns[pattern].append(index)

    def freeze(self) -> None:
        self._freeze_tables()
        if len(self._anywhere) <= _FIND_AT_MOST:
            self._found_by_find = tuple((*key, tuple(tests)) for key, tests in self._anywhere.items())
        else:
            for (literal, fold, _, _), tests in self._anywhere.items():  # widened: anywhere in the buffer
                self._patterns[(b"(?i:" if fold else b"(?:") + re2.escape(literal) + b")"].extend(tests)
        self.set_patterns = split_patterns(self._patterns)
        self._sets = tuple(_compiled(patterns, anchored) for patterns, anchored in self.set_patterns)

    @property
    def patterns(self) -> dict[bytes, list[int]]:
        """The RE2 patterns (anchored ones start with \\A) and the tests each stands for."""
        return self._patterns

    @property
    def finds(self) -> tuple[tuple[bytes, bool, int, int | None, tuple[int, ...]], ...]:
        """The literals looked for with `bytes.find`: literal, folded, window start and end, tests."""
        return self._found_by_find

    @property
    def table_tests(self) -> tuple[FixedTest, ...]:
        """The fixed-bytes tests checked in Python, not by an RE2 set."""
        return tuple(self._table_tests)

    @property
    def relations(self) -> tuple[RelationTest, ...]:
        return tuple(self._relations)

    def _freeze_tables(self) -> None:
        offsets = tuple(sorted(self._slow))
        self._offsets = offsets
        self._tables = tuple(
            tuple(
                tuple(_standing(test) for test in self._slow[offset][value]) if value in self._slow[offset] else None
                for value in range(256)
            )
            for offset in offsets
        )
        past: list[tuple[_Standing, ...]] = [()]
        for table in reversed(self._tables):
            past.append((table[0] or ()) + past[-1])
        self._standing_past = tuple(reversed(past))
        for bound in _READ_BOUNDS:
            count = bisect_left(offsets, bound)
            if count and count not in self._readers:
                self._readers[count] = _reader(offsets[:count])
            if count == len(offsets):
                break

    def candidates(self, data: bytes, found: set[int]) -> None:
        """Add to `found` the tests of this group that may match `data`."""
        for matched in self._sets:
            _add_matches(matched, data, found)
        self.candidates_besides_sets(data, found)

    def candidates_besides_sets(self, data: bytes, found: set[int]) -> None:
        """Add to `found` the tests of this group that may match `data`, but for those of its RE2 sets."""
        for literal, fold, start, end, indices in self._found_by_find:
            # Searched in its window only (a 2-byte memmem over 4 KiB costs microseconds).
            if fold:
                if literal in data[start:end].lower():
                    found.update(indices)
            elif data.find(literal, start, end) >= 0:
                found.update(indices)
        if self._offsets:
            self._check_tables(data, found)
        for relation in self._relations:
            if relation.may_match(data):
                found.add(relation.index)

    def _check_tables(self, data: bytes, found: set[int]) -> None:
        offsets, tables = self._offsets, self._tables
        within = bisect_left(offsets, len(data))  # offsets[:within] lie inside the buffer
        ready = bisect_right(_READ_BOUNDS, len(data))  # a reader covers offsets below _READ_BOUNDS[ready - 1]
        count = bisect_left(offsets, _READ_BOUNDS[ready - 1]) if ready else 0
        values = self._readers[count](data) if count else ()
        # The tables the bytes pick, empty ones dropped, all in C: most bytes leave no test standing.
        standing: list[tuple[_Standing, ...]] = [*filter(None, map(getitem, tables, values))]
        standing.extend(tables[k][data[offsets[k]]] or () for k in range(count, within))
        standing.append(self._standing_past[within])
        size = len(data)
        for tests in standing:
            for index, offset, expected, plain_end, test in tests:
                if plain_end <= size:  # plain bytes inside the buffer: compared in place
                    if data.startswith(expected, offset):
                        found.add(index)
                elif test.may_match(data):
                    found.add(index)


# A Python-checked test as its table holds it: index, offset, expected bytes, where its bytes end
# when they can be compared in place (no mask, no folding; otherwise past any buffer), the test.
_Standing = tuple[int, int, bytes, int, FixedTest]
_NEVER_IN_PLACE: Final = 1 << 62


def _standing(test: FixedTest) -> _Standing:
    plain = test.mask is None and not test.fold
    end = test.offset + len(test.expected) if plain else _NEVER_IN_PLACE
    return (test.index, test.offset, test.expected, end, test)


def _reader(offsets: tuple[int, ...]) -> Callable[[bytes], tuple[int, ...]]:
    """Reads the bytes at `offsets` of a buffer in one call."""
    if len(offsets) == 1:
        only = offsets[0]
        return lambda data: (data[only],)
    return itemgetter(*offsets)


def _leading_chunk(value: bytes, flags: int) -> tuple[bytes, bool]:
    """Bytes a string pattern's match holds as they are, and whether the match starts with them.

    Under W and w a blank in the pattern matches a run of blanks (w: or none), so only the first
    run of non-blanks is sure; it starts the match unless blanks come before it.
    """
    if not flags & _STRING_COMPACT:
        return value, True
    chunks = _nonblank_runs(value)
    if not chunks:
        return b"", False
    return chunks[0], value.startswith(chunks[0])


def _nonblank_runs(value: bytes) -> list[bytes]:
    runs: list[bytes] = []
    current = bytearray()
    for byte in value:
        if byte in _WHITESPACE:
            if current:
                runs.append(bytes(current))
                current.clear()
        else:
            current.append(byte)
    if current:
        runs.append(bytes(current))
    return runs


class MagicPrefilter:
    """The top-level tests of a database that may match a buffer, for libmagic to try alone."""

    def __init__(self, database: MagicDatabase, only: frozenset[int] | None = None, regexes: bool = False) -> None:
        """`only`: the tests to consider (None: all); the others are never candidates. `regexes`:
        search the text pass's regexes as RE2 patterns (`magic_regex`), not by their literals."""
        self._regexes = regexes
        self.binary = _TestGroup(searches=False)
        self.text = _TestGroup(searches=True)
        self.always: list[int] = []  # tests with no condition that can be checked here
        self.never: list[int] = []  # tests that cannot match a buffer handed to libmagic
        for test in database.tests:
            if only is not None and test.index not in only:
                continue
            record = test.record
            if record.flag & _OFFNEGATIVE:
                # An offset from the end needs the file itself (libmagic's buffer_fill): on a buffer
                # the first line fails (msetoffset), whatever the bytes.
                self.never.append(test.index)
                continue
            group = self.text if record.flag & (_BINTEST | _TEXTTEST) == _TEXTTEST else self.binary
            if self._add(group, test.index, record):
                continue
            # A number compared otherwise than by equality costs libmagic nothing, so it stays a
            # candidate, unless it leads to `indirect`: that forces the whole database, so check it here.
            relation = None
            if test.index in database.needs_whole and record.type in NUMBERS and not record.flag & _INDIR:
                relation = relation_test(test.index, record)
            if relation is not None and record.offset >= 0:
                group.add_relation(relation)
            else:
                self.always.append(test.index)
        self.binary.freeze()
        self.text.freeze()
        # Text goes through both passes: one search over both groups' patterns (one RE2 call, not three).
        self.text_set_patterns = _merged_patterns((self.binary, self.text))
        self._text_set = _compiled(*self.text_set_patterns)
        self.test_count = len(database.tests)

    def _add(self, group: _TestGroup, index: int, record: MagicRecord) -> bool:
        """Record `record`'s condition in `group`; False when it has none this module can check."""
        if record.flag & (_INDIR | _OFFNEGATIVE) or record.reln != ord("=") or record.offset < 0:
            return False
        value = record.value[: record.vallen]
        fold = bool(record.str_flags & _STRING_IGNORE_CASE)
        if record.type == _STRING:
            chunk, at_start = _leading_chunk(value, record.str_flags)
            if record.str_range:
                chunk = chunk[: record.str_range]  # libmagic copies no more than that from the buffer
            if not chunk or not at_start:
                return False
            expected = chunk.lower() if fold else chunk
            group.add_fixed(FixedTest(index, record.offset, expected, None, fold))
            return True
        if record.type == _SEARCH:
            chunk, at_start = _leading_chunk(value, record.str_flags)
            if not chunk:
                return False
            highest = record.offset + record.str_range if record.str_range and at_start else None
            group.add_literals(index, frozenset([chunk]), fold, record.offset, highest)
            return True
        if record.type == _REGEX:
            # Only where asked, and in the text pass: its set searches whole buffers anyway (the
            # binary pass finds its few literals with memmem); over the whole database the regexes
            # grow the search's automaton past what it gains (3x the time on text here).
            translated = re2_pattern(value) if self._regexes and record.offset == 0 and group.searches else None
            if translated is not None and _re2_accepts(translated):
                group.add_pattern(index, b"(?i:" + translated + b")" if fold else translated)
                return True
            literals = required_literals(value)
            if not literals:
                return False
            group.add_literals(index, literals, fold, record.offset, None)
            return True
        if record.type in NUMBERS:
            number = number_test(index, record)
            if number is None:
                return False
            group.add_fixed(number)
            return True
        return False

    def candidates(self, data: bytes, text: bool | None) -> list[int]:
        """The tests (ascending) that may match `data`; `text`: libmagic's text pass runs on it
        (True), does not (False), or runs on a converted copy this filter cannot read (None)."""
        found = set(self.always)
        if text:
            _add_matches(self._text_set, data, found)
            self.binary.candidates_besides_sets(data, found)
            self.text.candidates_besides_sets(data, found)
            return sorted(found)
        self.binary.candidates(data, found)
        if text is None:
            found.update(self.text.indices)
        return sorted(found)
