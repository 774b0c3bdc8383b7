"""Reads the machine's compiled libmagic database (magic.mgc) and writes reduced copies of it.

The soft magic is a list of top-level tests, each followed by its continuation lines, in the
order libmagic tries them (strongest first); a database holding only some of those tests, in the
same order, answers exactly as the full one for any buffer on which the left-out tests cannot
match. `magic_prefilter` decides which tests can; this module only reads and writes the format
(file 5.x, `apprentice.c`: a header record, then the test set and the `name` set of fixed-size
`struct magic` records).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["MagicDatabase", "MagicFormatError", "MagicRecord", "TopLevelTest"]

_INDIRECT: Final = 41  # re-runs the whole soft magic at an offset: needs the whole database
_NAME: Final = 45
_USE: Final = 46

MAGIC_NUMBER: Final = 0xF11E041C
# The record layout below is that of format 18 (file 5.40 to 5.46): 376 bytes per record.
SUPPORTED_VERSION: Final = 18
RECORD_SIZE: Final = 376
VALUE_SIZE: Final = 128
_HEAD: Final = struct.Struct("<HBBBBBBBBBBiiIQ")  # cont_level ... lineno, then the mask/range union
_VALUE_AT: Final = _HEAD.size  # 32
_MIME_AT: Final = _VALUE_AT + VALUE_SIZE + 64  # after the value and the description


class MagicFormatError(ValueError):
    """The file is not a compiled magic database this module knows how to read."""


@dataclass(frozen=True, slots=True)
class MagicRecord:
    """The fields of one `struct magic` that decide whether a top-level test can match."""

    cont_level: int
    flag: int
    reln: int
    vallen: int
    type: int
    mask_op: int
    offset: int
    mask: int  # num_mask for numbers; for strings the low half is str_range, the high half str_flags
    value: bytes
    mime: str
    lineno: int

    @property
    def str_range(self) -> int:
        return self.mask & 0xFFFFFFFF

    @property
    def str_flags(self) -> int:
        return self.mask >> 32

    @classmethod
    def parse(cls, raw: bytes) -> MagicRecord:
        (
            cont,
            flag,
            _factor,
            reln,
            vallen,
            kind,
            _in_type,
            _in_op,
            mask_op,
            _cond,
            _factor_op,
            offset,
            _in_offset,
            lineno,
            mask,
        ) = _HEAD.unpack_from(raw)
        return cls(
            cont_level=cont,
            flag=flag,
            reln=reln,
            vallen=vallen,
            type=kind,
            mask_op=mask_op,
            offset=offset,
            mask=mask,
            value=raw[_VALUE_AT : _VALUE_AT + VALUE_SIZE],
            mime=raw[_MIME_AT : _MIME_AT + 80].split(b"\0", 1)[0].decode("ascii", "replace"),
            lineno=lineno,
        )


@dataclass(frozen=True, slots=True)
class TopLevelTest:
    """One top-level test: its first record parsed, and its raw records (continuations included)."""

    index: int
    record: MagicRecord
    raw: bytes


def _split(data: bytes, start: int, end: int) -> list[bytes]:
    """The records from `start` to `end` grouped as top-level lines with their continuations."""
    groups: list[bytes] = []
    while start < end:
        stop = start + RECORD_SIZE
        while stop < end and struct.unpack_from("<H", data, stop)[0] != 0:
            stop += RECORD_SIZE
        groups.append(data[start:stop])
        start = stop
    return groups


def _records(raw: bytes) -> list[MagicRecord]:
    return [MagicRecord.parse(raw[at : at + RECORD_SIZE]) for at in range(0, len(raw), RECORD_SIZE)]


def _c_string(value: bytes) -> bytes:
    return value.split(b"\0", 1)[0]


@dataclass(frozen=True, slots=True)
class _Name:
    """A `name` definition: its records, and the names its own `use` lines call."""

    raw: bytes
    uses: frozenset[bytes]
    indirect: bool
    mime: bool  # one of its records has a MIME type


@dataclass(frozen=True, slots=True)
class MagicDatabase:
    """A compiled database split into its top-level tests (in order) and its `name` definitions."""

    header: bytes
    tests: tuple[TopLevelTest, ...]
    names: dict[bytes, _Name]
    test_uses: tuple[frozenset[bytes], ...]  # per test, the names it calls (directly or not)
    needs_whole: frozenset[int]  # tests that run `indirect`: only the whole database answers them right
    # Tests that can print a MIME type: a record of theirs or of a name they call has one, or they
    # run `indirect`. With MIME output the others print nothing even when they match.
    mime_capable: frozenset[int]

    @classmethod
    def read(cls, path: Path) -> MagicDatabase:
        return cls.parse(path.read_bytes())

    @classmethod
    def parse(cls, data: bytes) -> MagicDatabase:
        if len(data) < RECORD_SIZE or len(data) % RECORD_SIZE:
            raise MagicFormatError("not a whole number of records")
        number, version, test_count, name_count = struct.unpack_from("<4I", data)
        if number != MAGIC_NUMBER:
            raise MagicFormatError("not a compiled magic file (or not little-endian)")
        if version != SUPPORTED_VERSION:
            raise MagicFormatError(f"format version {version}, this reader knows {SUPPORTED_VERSION}")
        if len(data) != RECORD_SIZE * (1 + test_count + name_count):
            raise MagicFormatError("record counts do not match the size")
        end_of_tests = RECORD_SIZE * (1 + test_count)
        tests: list[TopLevelTest] = []
        for raw in _split(data, RECORD_SIZE, end_of_tests):
            record = MagicRecord.parse(raw[:RECORD_SIZE])
            if record.cont_level != 0:
                raise MagicFormatError("the test set starts with a continuation line")
            tests.append(TopLevelTest(len(tests), record, raw))
        names: dict[bytes, _Name] = {}
        for raw in _split(data, end_of_tests, len(data)):
            records = _records(raw)
            if records[0].type != _NAME:
                raise MagicFormatError("the name set holds a line that is not a name")
            uses = frozenset(_c_string(r.value).lstrip(b"^") for r in records if r.type == _USE)
            indirect = any(r.type == _INDIRECT for r in records)
            names.setdefault(_c_string(records[0].value), _Name(raw, uses, indirect, any(r.mime for r in records)))
        test_uses: list[frozenset[bytes]] = []
        needs_whole: set[int] = set()
        mime_capable: set[int] = set()
        for test in tests:
            records = _records(test.raw)
            called = _closure(names, {_c_string(r.value).lstrip(b"^") for r in records if r.type == _USE})
            test_uses.append(called)
            if any(r.type == _INDIRECT for r in records) or any(names[n].indirect for n in called if n in names):
                needs_whole.add(test.index)
            if any(r.mime for r in records) or any(names[n].mime for n in called if n in names):
                mime_capable.add(test.index)
        mime_capable |= needs_whole
        return cls(
            data[:RECORD_SIZE], tuple(tests), names, tuple(test_uses), frozenset(needs_whole), frozenset(mime_capable)
        )

    def records(self, index: int) -> list[MagicRecord]:
        """The records of test `index`: its top-level line, then its continuations in order."""
        return _records(self.tests[index].raw)

    def name_can_print(self, name: bytes) -> bool:
        """Whether `use name` can print a MIME type or run `indirect` (through the names it calls)."""
        called = _closure(self.names, {name.lstrip(b"^")})
        return any(self.names[n].mime or self.names[n].indirect for n in called if n in self.names)

    def reduced(self, indices: list[int]) -> bytes:
        """A compiled database of the tests at `indices` (ascending) and the names they call."""
        body = b"".join(self.tests[i].raw for i in indices)
        called: set[bytes] = set().union(*(self.test_uses[i] for i in indices))
        names = b"".join(name.raw for key, name in self.names.items() if key in called)
        header = bytearray(self.header)
        struct.pack_into("<2I", header, 8, len(body) // RECORD_SIZE, len(names) // RECORD_SIZE)
        return bytes(header) + body + names


def _closure(names: dict[bytes, _Name], called: set[bytes]) -> frozenset[bytes]:
    """`called` and every name those names call in turn."""
    pending = list(called)
    seen = set(called)
    while pending:
        name = names.get(pending.pop())
        for inner in name.uses if name is not None else ():
            if inner not in seen:
                seen.add(inner)
                pending.append(inner)
    return frozenset(seen)
