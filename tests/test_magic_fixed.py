"""Numbers read at fixed offsets as libmagic reads and compares them (`magic_fixed`)."""

from __future__ import annotations

import pytest

from rhinobox.ingest.magic_db import MagicRecord
from rhinobox.ingest.magic_fixed import number_condition, relation_test

_UNSIGNED = 0x08
_BYTE, _LESHORT, _BESHORT = 1, 2, 7


def _record(type_: int, reln: str, value: int, offset: int = 0, unsigned: bool = False, mask: int = 0) -> MagicRecord:
    stored = value & ((1 << 64) - 1)  # libmagic keeps a test's value in 64 bits, negatives two's complement
    return MagicRecord(
        cont_level=0,
        flag=_UNSIGNED if unsigned else 0,
        reln=ord(reln),
        vallen=0,
        type=type_,
        mask_op=0,
        offset=offset,
        mask=mask,
        value=stored.to_bytes(8, "little"),
        mime="",
        lineno=0,
    )


@pytest.mark.parametrize(
    ("record", "data", "expected"),
    [
        # 0xF0 is -16 read signed and 240 unsigned: only the unsigned reading is above 16.
        (_record(_BYTE, ">", 0x10), b"\xf0", False),
        (_record(_BYTE, ">", 0x10, unsigned=True), b"\xf0", True),
        (_record(_BYTE, "<", -1), b"\xfe", True),  # -2 < -1
        (_record(_BYTE, "<", -1, unsigned=True), b"\xfe", True),  # 254 < 2**64 - 1
        (_record(_BYTE, "!", 7), b"\x07", False),
        (_record(_BYTE, "!", 7), b"\x08", True),
        (_record(_BYTE, "&", 0x81), b"\x83", True),  # every bit of the value is set
        (_record(_BYTE, "&", 0x81), b"\x03", False),
        (_record(_BYTE, "^", 0x81), b"\x03", True),  # not every bit set
        (_record(_BYTE, "^", 0x81), b"\x81", False),
        (_record(_LESHORT, ">", 0x1200, unsigned=True, mask=0xFF00), b"\x34\x12", False),  # masked: 0x1200
        (_record(_LESHORT, ">", 0x11FF, unsigned=True, mask=0xFF00), b"\x34\x12", True),
        (_record(_BESHORT, "<", 0x1235, unsigned=True), b"\x12\x34", True),  # big-endian: 0x1234
        (_record(_BESHORT, "<", 0x1235, unsigned=True, offset=1), b"\x00\x12\x36", False),
        (_record(_LESHORT, "<", 0), b"\x00", True),  # past the end: not modelled, may match
    ],
)
def test_relations_read_numbers_as_libmagic_does(record: MagicRecord, data: bytes, expected: bool) -> None:
    test = relation_test(0, record)
    assert test is not None
    assert test.may_match(data) is expected
    condition = number_condition(record)  # what the gates check for the same record
    assert condition is not None
    assert condition.may_match(data) is expected


def test_equality_is_a_fixed_test_not_a_relation() -> None:
    record = _record(_BESHORT, "=", 0x1234, unsigned=True)
    assert relation_test(0, record) is None
    condition = number_condition(record)
    assert condition is not None
    assert condition.may_match(b"\x12\x34")
    assert not condition.may_match(b"\x34\x12")
