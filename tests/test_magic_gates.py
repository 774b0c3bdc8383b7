"""Typing without libmagic when no test can print a MIME type (issue 19): the same answers as libmagic.

Three claims, each checked against libmagic itself: when `MimeTestFilter` says no soft-magic test can
print a MIME type, the whole database answers as the built-in tests alone; `plain_answer`, when it
answers, answers as those built-in tests; and the regex translations behind both err only towards
"may match" (or, for `!`, towards "cannot tell").
"""

from __future__ import annotations

import random
from typing import Literal

import pytest

from benchmarks.workload import small_files
from rhinobox.ingest.magic_cookies import LibmagicHandle
from rhinobox.ingest.magic_db import MagicDatabase
from rhinobox.ingest.magic_gates import MimeTestFilter
from rhinobox.ingest.magic_plain import OCTET_STREAM, PLAIN_TEXT, plain_answer
from rhinobox.ingest.magic_regex import regex_certain, regex_condition, translate
from rhinobox.ingest.sniff import TEXT_WINDOW, MimeSniffer, _text_pass
from tests.magic_checks import disagreements, regex_example, varied_buffers

_MIME_TYPE = 0x10
_BUILTIN = 0x10 | 0x4000 | 0x1000 | 0x10000 | 0x8000  # MIME type, no soft magic (sniff._BUILTIN_FLAGS)
_REGEX = 17


def test_plain_answers_are_the_built_in_tests_answers() -> None:
    builtin = LibmagicHandle(_BUILTIN)
    answered = {PLAIN_TEXT: 0, OCTET_STREAM: 0}
    wrong = []
    for data in varied_buffers(random.Random(5)):
        mine = plain_answer(data)
        if mine is None:
            continue
        answered[mine] += 1
        theirs = (builtin.answer(data) or "").strip()
        if mine != theirs:
            wrong.append(f"{data[:30]!r}: {mine} instead of {theirs}")
    assert wrong == []
    assert answered[PLAIN_TEXT] > 100  # the common cases are answered
    assert answered[OCTET_STREAM] > 60


def test_where_no_test_can_print_a_type_the_whole_database_answers_as_the_built_in_tests(
    mime_filter: MimeTestFilter,
) -> None:
    """The soundness of the filter: on buffers it calls untyped, libmagic with every test (`file`'s
    answer on the buffer) equals libmagic with none."""
    rng = random.Random(17)
    buffers = varied_buffers(rng) + [bytes(f) for kind in ("binary", "text") for f in small_files(rng, 300, 4096, kind)]
    full, builtin = LibmagicHandle(_MIME_TYPE), LibmagicHandle(_BUILTIN)
    untyped = 0
    wrong = []
    for data in buffers:
        text = _text_pass(data)
        if text is None or mime_filter.may_print(data, text):
            continue
        untyped += 1
        if full.answer(data) != builtin.answer(data):
            wrong.append(f"{data[:30]!r}: {full.answer(data)} (whole) against {builtin.answer(data)} (built-in)")
    assert wrong == []
    assert untyped > 700


def test_most_text_and_unknown_bytes_are_typed_without_libmagic(mime_filter: MimeTestFilter) -> None:
    """What the filter is for: the benchmark's text and random bytes rarely reach libmagic."""
    rng = random.Random(29)
    kinds: tuple[Literal["text", "binary"], ...] = ("text", "binary")
    for kind in kinds:
        buffers = [bytes(f) for f in small_files(rng, 400, 4096, kind)]
        plain = [data for data in buffers if plain_answer(data)]
        untyped = [data for data in plain if not mime_filter.may_print(data, bool(_text_pass(data)))]
        assert len(untyped) >= 0.85 * len(buffers), kind


def test_buffers_made_to_match_each_regex_get_libmagic_answer(database: MagicDatabase) -> None:
    """For every top-level regex test, a buffer holding an example of it at a line's start (the
    buffer's, or one in the middle): the sniffer with its shortcuts answers as libmagic."""
    rng = random.Random(41)
    filler = bytes(small_files(rng, 1, 3000, "text")[0])
    buffers = []
    for test in database.tests:
        record = test.record
        if record.type != _REGEX or record.offset < 0 or record.offset > 1024 or record.flag & 0x83:
            continue
        example = regex_example(record.value[: record.vallen].split(b"\0", 1)[0], rng)
        if not example:
            continue
        head = filler[: record.offset]
        buffers += [head + example + b"\n" + filler, head + filler[:200] + b"\n" + example + b"\n" + filler[200:]]
    assert len(buffers) > 120  # two per regex test the example maker reads (about 70 here)
    assert disagreements(buffers) == []
    whole = MimeSniffer(prefilter=False)
    assert (
        len({whole.sniff_document(data) for data in buffers} - {PLAIN_TEXT}) >= 5
    )  # the examples type as the tests do


def test_scripts_with_trailing_nuls_are_read_as_libmagic_reads_them() -> None:
    """UTF-8 with NULs at the end only: libmagic's text pass drops them and reads the text."""
    script = "#!/usr/bin/env python3\nprint('é')\n".encode()
    assert disagreements([script + b"\0" * n for n in (1, 4)] + [script + b"\0" + script]) == []


def test_offsets_from_the_end_match_nothing_in_a_buffer() -> None:
    """An empty zip's end record (found from the end of a file) does not type a buffer: libmagic
    reads offsets from the end only in files, so neither does the sniffer."""
    tail = b"PK\x05\x06" + bytes(18)
    assert (
        disagreements(
            [b"\x01\x02garbage" * 10 + tail, tail, bytes(small_files(random.Random(1), 1, 500, "text")[0]) + tail]
        )
        == []
    )


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        (
            rb"^\.[A-Za-z][A-Za-z0-9]$",
            [b".TH\nx", b"x\n.ig\n", b".ig\r\n", b".ig\0"],
            [b"x.ig\n", b".ig x\n", b". ig\n"],
        ),
        (b"^[^Cc \t].*$", [b"x\n", b"C\nx"], [b"C \n", b"\tx\n", b"\n\n"]),
        (b"(class|module)[ \t]+[A-Z]", [b"  class Foo"], [b"classFoo", b"module foo"]),
        (b"a{2,3}b", [b"aab"], [b"ab"]),
    ],
)
def test_translated_regexes_match_as_posix_does(
    pattern: bytes, matching: list[bytes], not_matching: list[bytes]
) -> None:
    condition = regex_condition(pattern, 0, 0, False, False)
    assert condition is not None
    assert [data for data in matching if not condition.may_match(data)] == []
    assert [data for data in not_matching if condition.may_match(data)] == []


@pytest.mark.parametrize("pattern", [rb"\<word", rb"a\wb", b"[[:alpha:]]x", rb"(a)\1", b"[a\\]b"])
def test_syntax_the_engines_read_differently_is_not_translated(pattern: bytes) -> None:
    assert regex_condition(pattern, 0, 0, False, False) is None


def test_a_negated_regex_is_called_certain_only_inside_libmagic_region() -> None:
    """`regex/3l`: libmagic reads up to its third counted newline (less the region's last byte),
    or up to its last one; a match past that, or after a NUL, is no match to libmagic."""
    certain = regex_certain(b"^x", 0, 3, True, False)
    assert certain is not None
    assert certain.holds(b"x\nb\nc\n")
    assert certain.holds(b"a\nx\nc\nd\n")
    # libmagic reads "a\nb\n": its last newline found is the buffer's last byte
    assert not certain.holds(b"a\nb\nx\n")
    assert not certain.holds(b"a\nb\nc\nx\n")
    assert not certain.holds(b"a\0\nx\n")
    assert not certain.holds(b"ax")
    assert not certain.holds(b"a\rx\r")  # lines ended by carriage returns alone: not read
    assert regex_certain(b"^x$", 0, 3, True, False) is None  # where the part ends, `$` could not be told


def test_translation_keeps_a_newline_out_of_negated_lists() -> None:
    assert b"\\x0a" in translate(b"[^a]")


def test_documents_past_the_text_window_keep_their_answer() -> None:
    """Documents longer than the text window go through the built-in tests first, then the filter."""
    rng = random.Random(43)
    buffers = [bytes(f) * 3 for f in small_files(rng, 40, TEXT_WINDOW, "text")]
    buffers += [rng.randbytes(TEXT_WINDOW * 2) for _ in range(40)]
    assert disagreements(buffers) == []
