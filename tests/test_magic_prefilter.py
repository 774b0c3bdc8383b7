"""The soft-magic prefilter changes no answer (issue 19): libmagic on the candidate tests alone
answers as libmagic on the whole database, on real files, on noise and text, and on buffers made
to satisfy each test the prefilter indexes. So the list of types it stops recognising is empty.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Literal

import magic
import pytest

from benchmarks.sniff_corpus import build_corpus
from benchmarks.workload import small_files
from rhinobox.ingest import magic_prefilter
from rhinobox.ingest.magic_cookies import ReducedMagic, database_path, load_prefilter
from rhinobox.ingest.magic_db import MagicDatabase
from rhinobox.ingest.magic_literals import required_literals
from rhinobox.ingest.magic_prefilter import MagicPrefilter
from rhinobox.ingest.sniff import TEXT_WINDOW, _text_pass
from tests.magic_checks import disagreements

Loaded = tuple[MagicDatabase, MagicPrefilter]


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    result = load_prefilter()
    assert result is not None, "the machine's magic.mgc could not be read (format 18 expected, file 5.40+)"
    return result


def test_the_database_is_read_whole(loaded: Loaded) -> None:
    database, prefilter = loaded
    assert len(database.tests) > 3000  # Debian 12's file 5.44 has about 3,550 top-level tests
    assert len(database.names) > 200
    checked = len(set(prefilter.binary.indices) | set(prefilter.text.indices))
    assert checked + len(prefilter.always) + len(prefilter.never) == len(database.tests)
    assert 0 < len(prefilter.never) < 20  # offsets from the end: a buffer has none (libmagic's buffer_fill)
    assert len(prefilter.always) < 100  # nearly every test has a condition checked before libmagic runs


def test_real_files_get_the_same_answer(tmp_path: Path) -> None:
    buffers = []
    for path in build_corpus(tmp_path):
        data = path.read_bytes()
        buffers += [data[:131072], data[:TEXT_WINDOW], data[:600], data[1:4097]]
    assert len(buffers) > 2000
    assert disagreements(buffers) == []


def test_noise_text_and_media_get_the_same_answer() -> None:
    rng = random.Random(19)
    buffers = [f for kind in ("binary", "text", "media") for f in small_files(rng, 400, 4096, kind)]
    buffers += [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    assert disagreements(buffers) == []


def test_buffers_made_to_pass_each_test_get_the_same_answer(loaded: Loaded) -> None:
    """For every test with fixed bytes, a buffer holding them (in noise, in text): the filter must not drop it."""
    database, _ = loaded
    rng = random.Random(7)
    buffers = []
    for test in database.tests:
        record = test.record
        if record.type not in (5, 20) or record.offset < 0 or record.offset > 4096 or record.flag & 0x81:
            continue
        value = record.value[: record.vallen]
        for filler in (rng.randbytes(4096), bytes(small_files(rng, 1, 4096, "text")[0])):
            at = record.offset + (
                rng.randrange(0, min(record.str_range, 64) + 1) if record.type == 20 and record.str_range else 0
            )
            buffers.append(filler[:at] + value + filler[at + len(value) :])
    assert len(buffers) > 4000
    assert disagreements(buffers) == []


# Numeric types (file.h) and their width and byte order, for building buffers that hold a value.
_NUMBER_TYPES: dict[int, tuple[int, Literal["little", "big"]]] = {
    1: (1, "little"), 2: (2, "little"), 4: (4, "little"), 7: (2, "big"), 8: (4, "big"),
    10: (2, "little"), 11: (4, "little"), 24: (8, "little"), 25: (8, "little"), 26: (8, "big"),
}  # fmt: skip


def test_numbers_equal_to_a_test_value_keep_that_test_a_candidate(loaded: Loaded) -> None:
    """Every number compared for equality (masked or not, near or far): a buffer holding it, with
    random bits wherever the mask ignores them, keeps the test among the candidates."""
    database, prefilter = loaded
    rng = random.Random(11)
    checked = 0
    for test in database.tests:
        record = test.record
        if record.type not in _NUMBER_TYPES or record.reln != ord("=") or record.flag & 0x81 or record.mask_op:
            continue
        width, order = _NUMBER_TYPES[record.type]
        full = (1 << (8 * width)) - 1
        mask = (record.mask & full) if record.mask else full
        number = (int.from_bytes(record.value[:8], "little") & mask) | (rng.getrandbits(8 * width) & ~mask & full)
        filler = rng.randbytes(max(4096, record.offset + width + 16))
        data = filler[: record.offset] + number.to_bytes(width, order) + filler[record.offset + width :]
        text_test = record.flag & 0x60 == 0x40
        assert test.index in prefilter.candidates(data, text=text_test), f"line {record.lineno} dropped"
        checked += 1
    assert checked > 500


def test_the_reduced_database_answers_as_the_whole_one_for_the_same_buffer(loaded: Loaded) -> None:
    database, prefilter = loaded
    reduced = ReducedMagic(database, flags=0x10)
    png = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\x0dIHDR" + bytes.fromhex("00000010000000100806000000") + bytes(20)
    assert magic.from_buffer(png, mime=True) == "image/png"
    candidates = prefilter.candidates(png, text=False)
    assert len(candidates) < 200
    assert reduced.answer(candidates, png) == "image/png"
    always_only = ReducedMagic(database, flags=0x10)  # a fresh one: the first would reuse its PNG handle
    assert always_only.answer(prefilter.always, png) != "image/png"  # the PNG test is not among the "always" ones


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (rb"^export (function|class|default|const|var|let|async) ", {b"export "}),
        (rb"^[[:space:]]*(class|module)[[:space:]][A-Z]", {b"class", b"module"}),
        (rb"\(;.*GM\[[0-9]{1,2}\]", {b"GM["}),
        (rb"^(CFLAGS|VPATH|LDFLAGS|all:|\.PRECIOUS)", {b"CFLAGS", b"VPATH", b"LDFLAGS", b"all:", b".PRECIOUS"}),
        (b"^[!-?A-~]{1,255}(\t[^\t]+){11}", {b"\t"}),  # the tab as magic.mgc holds it
        (rb"ab?c", {b"a"}),
        (rb"(ab)*cd", {b"cd"}),
        (rb"x\<word", {b"word"}),
        (rb"a|b", {b"a", b"b"}),
        (rb"(a|)b", {b"b"}),
    ],
)
def test_required_literals(pattern: bytes, literals: set[bytes]) -> None:
    assert required_literals(pattern) == frozenset(literals)


@pytest.mark.parametrize("pattern", [rb"(a|)", rb".*", rb"[abc]+", rb"x{,3}", rb"(unclosed", rb"^$"])
def test_no_literal_is_named_when_none_is_required(pattern: bytes) -> None:
    assert required_literals(pattern) is None


def test_handles_grow_to_cover_rare_candidates_instead_of_multiplying(loaded: Loaded) -> None:
    """Noise brings a few rare candidate tests each; a widened handle answers for all of them, as
    libmagic on the whole database does, and handles stop being built once it covers them."""
    database, prefilter = loaded
    reduced = ReducedMagic(database, flags=0x10)
    whole = magic.Magic(mime=True)
    buffers = small_files(random.Random(5), 1500, 4096, "binary")
    sets = {tuple(prefilter.candidates(data, text=False)) for data in buffers}
    assert len(sets) > 20  # rare tests do come and go
    for data in buffers:
        assert reduced.answer(prefilter.candidates(data, text=False), data) == whole.from_buffer(data)
    built = reduced.built
    assert built < len(sets)
    for data in buffers:
        reduced.answer(prefilter.candidates(data, text=False), data)
    assert reduced.built == built


def test_buffers_called_binary_are_binary_to_libmagic_encoding_check() -> None:
    """`_text_pass` skips the text tests for a buffer with a NUL: libmagic must find no text
    encoding in it (charset "binary"), whether the rest is noise, ASCII, Latin-1, UTF-8 or EBCDIC."""
    rng = random.Random(23)
    encoding = magic.Magic(mime_encoding=True)
    texts = [bytes(t) for t in small_files(rng, 50, 2048, "text")]
    buffers = [rng.randbytes(rng.randrange(1, 5000)) for _ in range(300)]
    for text in texts:
        for variant in (
            text,
            text.decode().encode("cp1252", "replace") + b"\xe9",
            ("é" + text.decode()).encode(),
            text.decode().encode("cp500"),
        ):
            at = rng.randrange(0, len(variant))
            buffers.append(variant[:at] + b"\0" + variant[at:])
    called_binary = [data for data in buffers if _text_pass(data) is False]
    assert len(called_binary) > 400
    assert [data[:20] for data in called_binary if encoding.from_buffer(data) != "binary"] == []


def test_a_database_the_prefilter_cannot_read_turns_it_off_with_a_warning(tmp_path: Path) -> None:
    """Local magic sources next to the compiled database (libmagic's MAGIC path): the prefilter
    cannot cover them, so it is off, a warning says so, and types still come from libmagic."""
    local = tmp_path / "local.magic"
    local.write_text("0\tstring\tRHINOTEST\tRhinoBox test data\n!:mime\tapplication/x-rhino-test\n")
    script = (
        "import logging; logging.basicConfig(level=logging.WARNING);"
        "from rhinobox.ingest.magic_cookies import load_prefilter;"
        "from rhinobox.ingest.sniff import MimeSniffer;"
        "print(load_prefilter() is None, MimeSniffer().sniff_document(b'RHINOTEST' + bytes(100)))"
    )
    compiled = database_path()
    assert compiled is not None
    env = {**os.environ, "MAGIC": f"{local}:{compiled.with_suffix('')}"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "application/x-rhino-test"]
    assert "soft-magic prefilter off" in done.stderr


def test_search_tests_stay_candidates_at_either_end_of_their_range(loaded: Loaded) -> None:
    """A `search/N` test's bytes at the first and the last start it allows (offset, offset + N - 1),
    however far: the windowed search for its literal must still find them."""
    database, prefilter = loaded
    rng = random.Random(13)
    checked = 0
    for test in database.tests:
        record = test.record
        if record.type != 20 or not record.str_range or record.offset < 0 or record.flag & 0x81:
            continue
        value = record.value[: record.vallen]
        text_test = record.flag & 0x60 == 0x40
        for at in (record.offset, record.offset + record.str_range - 1):
            filler = rng.randbytes(max(4096, at + len(value) + 16))
            data = filler[:at] + value + filler[at + len(value) :]
            assert test.index in prefilter.candidates(data, text=text_test), f"line {record.lineno} dropped at {at}"
            checked += 1
    assert checked > 200


def test_text_is_matched_in_one_re2_call_for_the_tests_of_both_passes(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every RE2 call lets go of the GIL, and a worker that does so while the event loop waits for
    it pays two thread switches: text, which both passes look at, is searched once, with the same
    candidates as each pass's own sets give."""
    _, prefilter = loaded
    calls: list[int] = []
    add_matches = magic_prefilter._add_matches

    def counted(matched: tuple[object, ...], data: bytes, found: set[int]) -> None:
        calls.append(1)
        add_matches(matched, data, found)  # type: ignore[arg-type]

    monkeypatch.setattr(magic_prefilter, "_add_matches", counted)
    made = [b"#!/bin/sh\necho hi\n", b"<?xml version='1.0'?>\n<svg></svg>\n", b"<!DOCTYPE html>\n<html></html>\n"]
    texts = made + small_files(random.Random(3), 40, 4096, "text")
    matched_any = False
    for data in texts:
        calls.clear()
        got = prefilter.candidates(data, True)
        assert len(calls) == 1
        by_pass = set(prefilter.always)
        prefilter.binary.candidates(data, by_pass)
        prefilter.text.candidates(data, by_pass)
        assert got == sorted(by_pass)
        matched_any = matched_any or len(got) > len(prefilter.always) + 5
    assert matched_any
