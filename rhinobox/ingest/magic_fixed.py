"""Conditions on the bytes at a fixed offset of a buffer, as libmagic reads numbers and strings there.

Shared by the prefilter (top-level tests) and the gates (the records below them); each errs one
way only, towards "may match".
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from rhinobox.ingest.magic_db import MagicRecord

__all__ = [
    "NUMBERS",
    "FixedTest",
    "ModuloTest",
    "NumberCondition",
    "RelationTest",
    "number_condition",
    "number_test",
    "relation_test",
]

# struct magic flag bits and mask operators (file.h).
_INDIR: Final = 0x01
_OFFADD: Final = 0x02
_INDIROFFADD: Final = 0x04
_UNSIGNED: Final = 0x08
_OFFNEGATIVE: Final = 0x80
_OPAND: Final = 0
_OPS_MASK: Final = 0x07
_OPMODULO: Final = 0x07  # a plain `%`, not inverted (FILE_OPINVERSE) nor indirect

# Number types: width and byte order ("<" little, ">" big); dates compare as the numbers they are.
NUMBERS: Final[dict[int, tuple[int, str]]] = {
    1: (1, "<"), 2: (2, "<"), 4: (4, "<"), 6: (4, "<"), 7: (2, ">"), 8: (4, ">"), 9: (4, ">"),
    10: (2, "<"), 11: (4, "<"), 12: (4, "<"), 14: (4, "<"), 15: (4, ">"), 16: (4, "<"),
    24: (8, "<"), 25: (8, "<"), 26: (8, ">"), 27: (8, "<"), 28: (8, "<"), 29: (8, ">"),
    30: (8, "<"), 31: (8, "<"), 32: (8, ">"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FixedTest:
    """Bytes a match has at a fixed offset (compared after `mask`, or case-folded)."""

    index: int
    offset: int
    expected: bytes
    mask: int | None  # the bytes read big-endian, ANDed with this, must equal `expected` read the same way
    fold: bool
    padded: bool = True  # a string: libmagic compares it with a zero-padded copy past the buffer's end

    def may_match(self, data: bytes) -> bool:
        size = len(self.expected)
        chunk = data[self.offset : self.offset + size]
        if len(chunk) < size:
            chunk = chunk.ljust(size, b"\0")  # libmagic compares a string against a zero-padded copy
        if self.fold:
            return chunk.lower() == self.expected
        if self.mask is None:
            return chunk == self.expected
        return int.from_bytes(chunk, "big") & self.mask == int.from_bytes(self.expected, "big")

    def first_bytes(self) -> list[int]:
        """The values of the byte at `offset` that this test accepts."""
        first = self.expected[0]
        if self.fold:
            return sorted({first, bytes([first]).upper()[0]})
        if self.mask is None:
            return [first]
        top = (self.mask >> (8 * (len(self.expected) - 1))) & 0xFF
        return [value for value in range(256) if value & top == first]


@dataclass(frozen=True, slots=True)
class RelationTest:
    """A number compared by <, >, !, & or ^, as libmagic compares it (softmagic.c `magiccheck`).

    Everything that does not depend on the buffer is worked out once (`relation_test`): the gates
    check some of these on every buffer.
    """

    index: int
    offset: int
    width: int
    byteorder: Literal["little", "big"]
    mask: int | None
    sign_bit: int  # the number's top bit when it is read signed, else 0
    compare: Callable[[int, int], bool]
    value: int  # signed when the number is
    reln: int  # the relation's character: what `compare` does

    def may_match(self, data: bytes) -> bool:
        chunk = data[self.offset : self.offset + self.width]
        if len(chunk) < self.width:
            return True  # libmagic's reading past the end is not modelled here
        number = int.from_bytes(chunk, self.byteorder)
        if self.mask is not None:
            number &= self.mask
        if number & self.sign_bit:
            number -= self.sign_bit << 1
        return self.compare(number, self.value)


def _all_set(left: int, right: int) -> bool:
    return left & right == right


def _not_all_set(left: int, right: int) -> bool:
    return left & right != right


_COMPARISONS: Final[dict[int, Callable[[int, int], bool]]] = {
    ord("<"): operator.lt,
    ord(">"): operator.gt,
    ord("!"): operator.ne,
    ord("&"): _all_set,
    ord("^"): _not_all_set,
}


def _masked_by_and(record: MagicRecord) -> bool:
    """No mask, or a plain AND with one (not OR, XOR, arithmetic, inverted or indirect)."""
    return not record.mask_op & ~_OPS_MASK and (not record.mask or record.mask_op & _OPS_MASK == _OPAND)


def relation_test(index: int, record: MagicRecord) -> RelationTest | None:
    """`record`'s comparison other than equality, checkable on a buffer (None: a mask we do not model)."""
    width, order = NUMBERS[record.type]
    if record.reln not in b"<>!&^" or not _masked_by_and(record):
        return None
    value = int.from_bytes(record.value[:8], "little")  # libmagic keeps 64 bits
    sign_bit = 0 if record.flag & _UNSIGNED else 1 << (8 * width - 1)
    if sign_bit and value >> 63:
        value -= 1 << 64
    byteorder: Literal["little", "big"] = "little" if order == "<" else "big"
    compare = _COMPARISONS[record.reln]
    return RelationTest(
        index, record.offset, width, byteorder, record.mask or None, sign_bit, compare, value, record.reln
    )


def number_test(index: int, record: MagicRecord) -> FixedTest | None:
    """`record`'s equality as the bytes it needs at its offset (None: a mask with no fixed bytes)."""
    width, order = NUMBERS[record.type]
    if not _masked_by_and(record):
        return None  # OR, XOR, arithmetic or an inverted mask: no fixed bytes
    full = (1 << (8 * width)) - 1
    mask = (record.mask & full) if record.mask else full
    value = int.from_bytes(record.value[:8], "little") & mask
    byteorder: Literal["little", "big"] = "little" if order == "<" else "big"
    expected = value.to_bytes(width, byteorder)
    big_endian_mask = int.from_bytes(mask.to_bytes(width, byteorder), "big")
    masked = None if mask == full else big_endian_mask
    return FixedTest(index, record.offset, expected, masked, fold=False, padded=False)


@dataclass(frozen=True, slots=True)
class ModuloTest:
    """`type%N = V`: libmagic takes the remainder in the type's unsigned width (softmagic.c `cvt_*`)."""

    offset: int
    width: int
    byteorder: Literal["little", "big"]
    modulus: int
    expected: int

    def may_match(self, data: bytes) -> bool:
        chunk = data[self.offset : self.offset + self.width]
        return len(chunk) < self.width or int.from_bytes(chunk, self.byteorder) % self.modulus == self.expected


def _modulo_test(record: MagicRecord) -> ModuloTest | None:
    width, order = NUMBERS[record.type]
    full = (1 << (8 * width)) - 1
    modulus = record.mask & full
    if not modulus:
        return None
    byteorder: Literal["little", "big"] = "little" if order == "<" else "big"
    return ModuloTest(record.offset, width, byteorder, modulus, int.from_bytes(record.value[:8], "little") & full)


NumberCondition = FixedTest | RelationTest | ModuloTest


def number_condition(record: MagicRecord) -> NumberCondition | None:
    """A necessary condition for a number record read at a fixed offset (None: none modelled here).

    It errs towards "may match" only (past the buffer's end too, where libmagic reads no number).
    """
    if record.type not in NUMBERS or record.flag & (_INDIR | _OFFADD | _INDIROFFADD | _OFFNEGATIVE):
        return None
    if record.offset < 0 or record.reln == ord("x"):
        return None
    if record.mask_op == _OPMODULO and record.reln == ord("="):
        return _modulo_test(record)
    if record.reln == ord("="):
        return number_test(-1, record)
    return relation_test(-1, record)
