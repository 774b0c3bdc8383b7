"""The compiled gates' filter (issue 19): built by the install, and the same answers as the Python one.

The Python filter is the reference (its soundness against libmagic is tests/test_magic_gates.py);
here the compiled one must answer as it does on every buffer, built to reach deep into the tests:
each test's path of fixed bytes written into text and random bytes, each regex's example at a line
start, the benchmark's files, and the edge cases of the built-in tests.
"""

from __future__ import annotations

import ctypes
import platform
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest

from benchmarks.workload import small_files
from rhinobox.ingest.magic_db import MagicDatabase
from rhinobox.ingest.magic_fixed import FixedTest, ModuloTest, RelationTest
from rhinobox.ingest.magic_gates import (
    Gate,
    GuidTest,
    LiteralTest,
    MimeTestFilter,
    ModelledTest,
    Utf16Test,
)
from rhinobox.ingest.magic_native import FilterBuilder, NativeMimeFilter, load_native_filter, native_library
from rhinobox.ingest.magic_plain import OCTET_STREAM, PLAIN_TEXT, plain_answer
from rhinobox.ingest.sniff import MimeSniffer, _text_pass
from tests.magic_checks import plain_edges, regex_example, varied_buffers

_REGEX = 17


@pytest.fixture(scope="module")
def native_filter(mime_filter: MimeTestFilter) -> NativeMimeFilter:
    built = load_native_filter(mime_filter)
    assert built is not None, "the compiled filter did not build or load (the install needs g++ and libre2-dev)"
    return built


def _path(gate: Gate, branch: int) -> Iterator[tuple[int, bytes]]:
    """Bytes at offsets that satisfy the numbers and fixed strings on the way down a gate's first
    (`branch` 0) or last (-1) branches: strings as written and in the other case, numbers equal to
    the value they are compared with (a `&` holds, `!` fails, `<` and `>` sit on the edge)."""
    while True:
        test = gate.modelled
        if isinstance(test, FixedTest):
            yield test.offset, test.expected.swapcase() if test.fold and branch else test.expected
        elif isinstance(test, RelationTest):
            yield test.offset, (test.value & ((1 << (8 * test.width)) - 1)).to_bytes(test.width, test.byteorder)
        if not gate.below:
            return
        gate = gate.below[branch]


def _written(background: bytes, writes: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(background)
    for offset, value in writes:
        end = offset + len(value)
        if end > len(out):
            out.extend(bytes(end - len(out)))
        out[offset:end] = value
    return bytes(out)


_RNG = random.Random(71)
_TEXT = bytes(small_files(_RNG, 1, 3000, "text")[0])
_NOISE = _RNG.randbytes(3000)


def _gate_buffers(gate: Gate) -> list[bytes]:
    """Buffers that reach deep into `gate`: its paths' bytes written into text and into noise."""
    buffers = []
    for branch in (0, -1):
        path = list(_path(gate, branch))
        for background in (_TEXT, _NOISE):
            whole = _written(background, path)
            buffers += [whole, _written(background, path[1:])]
            # Cut short: conditions past the end (numbers and UTF-16 may hold, strings meet zeros).
            buffers += [whole[: offset + cut] for offset, _ in path[-2:] for cut in (0, 1)]
    return buffers


def _buffers(database: MagicDatabase, mime_filter: MimeTestFilter) -> list[bytes]:
    rng = random.Random(73)
    text = _TEXT
    buffers = varied_buffers(rng)
    buffers += [bytes(f) for kind in ("media", "binary", "text") for f in small_files(rng, 150, 4096, kind)]
    for gate in mime_filter.gates.values():
        buffers += _gate_buffers(gate)
    for group in (mime_filter.prefilter.binary, mime_filter.prefilter.text):
        for literal, _, start, end, _ in group.finds:  # just inside and just outside each window
            edges = [start - 1, start] if end is None else [start, end - len(literal), end - len(literal) + 1]
            for at in edges:
                buffers += [_written(_TEXT * 3, [(at, literal)]), _written(_NOISE, [(at, literal.swapcase())])]
    for test in database.tests:
        record = test.record
        if record.type == _REGEX and 0 <= record.offset <= 1024 and not record.flag & 0x83:
            example = regex_example(record.value[: record.vallen].split(b"\0", 1)[0], rng)
            if example:
                head = text[: record.offset]
                buffers += [
                    head + example + b"\n" + text,
                    text[:200] + b"\n" + example + b"\r\n" + text[200:],
                    head + example[:1] + b"\0" + example[1:] + b"\n" + text,  # regexec stops at a NUL
                    head + b"x\0\n" + example + b"\n" + text[:300],
                    head + example + b"\r" + text[:100].replace(b"\n", b"\r"),  # lines ended by carriage returns
                ]
    return buffers


def test_the_install_builds_the_compiled_filter_and_the_sniffer_uses_it() -> None:
    library = native_library()
    assert library is not None, "pip install builds rhinobox/ingest/_magic_native (g++, libre2-dev)"
    if platform.machine() == "x86_64":  # Debian builds Hyperscan for amd64: the install takes it there
        assert library.rb_hyperscan() == 1, "built without Hyperscan (libhyperscan-dev)"
    assert isinstance(MimeSniffer()._gates_filter(), NativeMimeFilter)
    assert not isinstance(MimeSniffer(native=False)._gates_filter(), NativeMimeFilter)


def test_the_compiled_filter_answers_as_the_python_one(
    database: MagicDatabase, mime_filter: MimeTestFilter, native_filter: NativeMimeFilter
) -> None:
    buffers = _buffers(database, mime_filter)
    differ = []
    answers = {True: 0, False: 0}
    for data in buffers:
        for text in (True, False):
            want = mime_filter.may_print(data, text)
            answers[want] += 1
            if native_filter.may_print(data, text) != want:
                differ.append(f"{data[:40]!r} (text {text}): the Python filter says {want}")
    assert differ == []
    assert len(buffers) > 3000
    assert min(answers.values()) > 1000  # both answers are common: the comparison means something


def test_each_gate_answers_as_the_python_one_on_buffers_made_for_it(
    database: MagicDatabase, mime_filter: MimeTestFilter, native_filter: NativeMimeFilter
) -> None:
    differ, unknown, answers = [], 0, {True: 0, False: 0}
    for index, gate in mime_filter.gates.items():
        for data in _gate_buffers(gate):
            want, got = gate.may_print(data), native_filter.gate_may_print(index, data)
            answers[want] += 1
            if got is None:
                unknown += 1
            elif got != want:
                differ.append(f"test {index} on {data[:40]!r}: the Python gate says {want}")
    assert differ == []
    assert unknown < 0.01 * sum(answers.values())  # conditions RE2 cannot say the same way are rare
    assert min(answers.values()) > 1000


def test_the_candidates_are_the_python_ones(
    database: MagicDatabase, mime_filter: MimeTestFilter, native_filter: NativeMimeFilter
) -> None:
    differ = []
    for data in _buffers(database, mime_filter):
        for text in (True, False):
            want, got = mime_filter.prefilter.candidates(data, text), native_filter.candidates(data, text)
            if got != want:
                differ.append(f"{data[:40]!r} (text {text}): {sorted(set(got or []) ^ set(want))} differ")
    assert differ == []


def _conditions(gate: Gate) -> Iterator[ModelledTest]:
    if gate.modelled is not None:
        yield gate.modelled
    for below in gate.below:
        yield from _conditions(below)


def _near(offset: int, value: bytes) -> list[bytes]:
    """`value` at `offset` in text and in noise, and the bytes around it: its other case, its last byte
    changed, zeros, all ones, cut short."""
    variants = [value, value.swapcase(), value[:-1] + bytes([value[-1] ^ 1]), bytes(len(value)), b"\xff" * len(value)]
    made = [_written(background, [(offset, variant)]) for variant in variants for background in (_TEXT, _NOISE)]
    whole = made[0]
    return made + [whole[: offset + cut] for cut in range(len(value))]


def _number(value: int, width: int, byteorder: Literal["little", "big"]) -> bytes:
    return (value & ((1 << (8 * width)) - 1)).to_bytes(width, byteorder)


def _condition_buffers(test: ModelledTest) -> list[bytes]:
    """Buffers on both sides of `test`'s condition."""
    if isinstance(test, FixedTest):
        return _near(test.offset, test.expected)
    if isinstance(test, RelationTest):
        near = (test.value - 1, test.value, test.value + 1, test.value | (test.mask or 0), ~test.value)
        return [b for v in near for b in _near(test.offset, _number(v, test.width, test.byteorder))]
    if isinstance(test, ModuloTest):
        remainders = (test.expected, test.expected + test.modulus, test.expected + 1)
        return [b for v in remainders for b in _near(test.offset, _number(v, test.width, test.byteorder))]
    if isinstance(test, Utf16Test):
        return _near(test.at, test.first)
    if isinstance(test, GuidTest):
        return _near(test.at, test.expected)
    if isinstance(test, LiteralTest):
        return [_TEXT[:500] + literal + _TEXT[500:] for literal in test.literals] + [
            _NOISE[:9] + literal.swapcase() for literal in test.literals
        ]
    lines = [b"C x\n", b"x\n", b"\tc\n", b"Cx\0\n", b"\0C\n", b"a\rC\r", b"C\n" * 3, b"x\0"]
    ended_by_returns = [b"a\rC\rx\r", b"x\ry\r" + _TEXT[:100].replace(b"\n", b"\r")]
    in_text = [_TEXT[:100] + b"\n" + line for line in lines]
    return [prefix + _TEXT[:200] for prefix in lines] + in_text + ended_by_returns


def test_each_condition_holds_where_the_python_one_does(mime_filter: MimeTestFilter) -> None:
    """Condition by condition (a gate's answer hides most of them): every number, string, literal,
    UTF-16, GUID and regex condition of the gates and the prefilter's tables, on both sides of it."""
    library = native_library()
    assert library is not None
    handle = library.rb_filter_new(1)
    try:
        builder = FilterBuilder(library, handle)
        prefilter = mime_filter.prefilter
        conditions: dict[int, ModelledTest] = {}
        for gate in mime_filter.gates.values():
            for test in _conditions(gate):
                conditions.setdefault(id(test), test)
        # Kinds this machine's database may lack: a case-folded string far in, a masked number.
        folded, masked = FixedTest(-1, 70, b"<html", None, True), FixedTest(-1, 3, b"\x12\x04", 0xFF0F, False)
        made_here: list[ModelledTest] = [folded, masked]
        for group in (prefilter.binary, prefilter.text):
            made_here += [*group.table_tests, *group.relations]
        for test in made_here:
            conditions[id(test)] = test
        kinds: dict[str, int] = {}
        differ, unknown = [], 0
        for test in conditions.values():
            made = builder.condition(test)
            kinds[type(test).__name__] = kinds.get(type(test).__name__, 0) + 1
            for data in _condition_buffers(test):
                answer = library.rb_condition_holds(handle, made, data, len(data))
                if answer == 2:
                    unknown += 1
                elif bool(answer) != test.may_match(data):
                    differ.append(f"{test!r} on {data[:40]!r}: the Python condition says {test.may_match(data)}")
        assert differ[:20] == []
        assert unknown < 200  # regexes RE2 cannot read the same way are few
        assert set(kinds) == {"FixedTest", "RelationTest", "ModuloTest", "LiteralTest", "Utf16Test", "GuidTest",
                              "RegexTest", "NegatedRegexTest"}  # fmt: skip
    finally:
        library.rb_filter_free(handle)


def test_threads_get_the_same_answers(
    database: MagicDatabase, mime_filter: MimeTestFilter, native_filter: NativeMimeFilter
) -> None:
    buffers = _buffers(database, mime_filter)[:1500]
    want = [mime_filter.may_print(data, True) for data in buffers]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: [native_filter.may_print(data, True) for data in buffers], range(4)))
    assert all(run == want for run in runs)


def test_the_sniffer_types_as_it_does_without_the_compiled_filter() -> None:
    rng = random.Random(5)
    buffers = varied_buffers(rng) + [bytes(f) for kind in ("binary", "text") for f in small_files(rng, 200, 4096, kind)]
    native, python = MimeSniffer(native=True), MimeSniffer(native=False)
    assert [native.sniff_document(data) for data in buffers] == [python.sniff_document(data) for data in buffers]


def test_typing_without_libmagic_answers_as_the_full_way_or_not_at_all() -> None:
    rng = random.Random(6)
    files = [bytes(f) for kind in ("media", "binary", "text") for f in small_files(rng, 300, 4096, kind)]
    for sniffer in (MimeSniffer(native=True), MimeSniffer(native=False)):
        for data in varied_buffers(rng) + files:
            mime = sniffer.sniff_without_libmagic(data)
            assert mime is None or mime == sniffer.sniff_document(data), data[:40]
        # Media, and most unknown bytes and plain text (about 7% need libmagic), are typed this way.
        assert sum(sniffer.sniff_without_libmagic(data) is not None for data in files) >= 0.85 * len(files)
    assert MimeSniffer(prefilter=False).sniff_without_libmagic(files[-1]) is None


def test_the_plain_checks_answer_as_the_python_ones() -> None:
    library = native_library()
    assert library is not None
    buffers = plain_edges(random.Random(8)) + varied_buffers(random.Random(9))
    passes = {False: 0, True: 1, None: 2}
    answers = {None: 0, PLAIN_TEXT: 1, OCTET_STREAM: 2}
    for data in buffers:
        assert library.rb_text_pass(data, len(data)) == passes[_text_pass(data)], data[:60]
        assert library.rb_plain_answer(data, len(data)) == answers[plain_answer(data)], data[:60]
    assert len({plain_answer(data) for data in buffers}) == 3  # the edges reach every answer
    assert len({_text_pass(data) for data in buffers}) == 3


def test_the_first_look_is_the_python_one(
    database: MagicDatabase, mime_filter: MimeTestFilter, native_filter: NativeMimeFilter
) -> None:
    python = MimeSniffer(native=False)
    buffers = plain_edges(random.Random(10)) + _buffers(database, mime_filter)
    looked = 0
    for data in buffers:
        look = native_filter.first_look(data)
        if look is not None:
            looked += 1
            assert look == python._first_look(data), data[:60]
    assert looked >= 0.9 * len(buffers)  # a deferred test hands back the rest


def test_a_filter_built_with_wrong_numbers_refuses_them() -> None:
    library = native_library()
    assert library is not None
    handle = library.rb_filter_new(10)
    try:
        assert library.rb_gate(handle, 10, 0) == -1  # no such test
        assert library.rb_node(handle, 5, 1) == -1  # no such condition
        node = library.rb_node(handle, -1, 1)
        assert library.rb_node_below(handle, node, node) == -1  # a cycle
        assert library.rb_always(handle, -1) == -1
        bad = b"(unclosed"
        assert library.rb_condition(handle, 9, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, bad, len(bad)) == -1
        deferred, count = (ctypes.c_int * 4)(), ctypes.c_size_t()
        data = b"some text"
        # The set searched on text was never built: the compiled filter hands the buffer to Python.
        assert library.rb_may_print(handle, data, len(data), 1, deferred, 4, ctypes.byref(count)) == 3
        assert library.rb_may_print(handle, data, len(data), 0, deferred, 4, ctypes.byref(count)) == 0
    finally:
        library.rb_filter_free(handle)
