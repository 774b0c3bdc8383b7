"""`JsonScan` gives libmagic's JSON answer for the whole document, however the bytes are split."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import magic
import pytest

from rhinobox.ingest.jsonscan import JSON_MIME, MAX_DEPTH, NDJSON_MIME, JsonScan

# libmagic with every test off but JSON: what `file` says of a whole document, JSON-wise.
_JSON_ONLY_FLAGS = 0x0000010 | 0x0001000 | 0x0002000 | 0x0004000 | 0x0010000 | 0x0020000 | 0x0040000 | 0x0080000
_JSON_ONLY_FLAGS |= 0x0200000
_SIGNIFICANT = b'{}[],:" \n\t\\-.e0123456789tfnu\x00x'


@pytest.fixture(scope="module")
def libmagic_json() -> magic.Magic:
    handle = magic.Magic(mime=True)
    magic.magic_setflags(handle.cookie, _JSON_ONLY_FLAGS)
    return handle


def libmagic_answer(handle: magic.Magic, document: bytes) -> str | None:
    answer = handle.from_buffer(document)
    return answer if answer in (JSON_MIME, NDJSON_MIME) else None


def scan(document: bytes, cuts: list[int]) -> str | None:
    scanner = JsonScan()
    start = 0
    for cut in [*sorted(cuts), len(document)]:
        scanner.feed(document[start:cut])
        start = cut
    return scanner.finish()


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.choice([0, -1, 12, 3.5, -0.25, 1e20, 6.02e-23])
    if kind in (2, 3, 4):
        return "".join(rng.choice('ab "\\\n/\u00e9\u2603\x01') for _ in range(rng.randrange(12)))
    if kind in (5, 6):
        return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.randrange(5))}
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def mutate(rng: random.Random, document: bytes) -> bytes:
    position = rng.randrange(len(document) + 1)
    action = rng.randrange(4)
    if action == 0:
        return document[:position]
    if action == 1:
        return document[:position] + bytes([rng.choice(_SIGNIFICANT)]) + document[position:]
    if action == 2:
        return document[:position] + document[position + 1 :]
    return document + rng.choice([b"\n", b" x", b"\n" + document, b"{}", b"[1]", b"\n{"])


def documents(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        value = rng.choice([random_value(rng), {"a": random_value(rng)}, [random_value(rng), random_value(rng)]])
        indent = rng.choice([None, 0, 2])
        text = json.dumps(value, indent=indent, ensure_ascii=rng.random() < 0.5).encode()
        if rng.random() < 0.3:
            text = b" \n" + text + b"\n" + text + b"\n"  # NDJSON, or a second value
        for _ in range(rng.randrange(3)):
            text = mutate(rng, text)
        yield text


def random_cuts(rng: random.Random, size: int) -> list[int]:
    if size == 0:
        return []
    if rng.random() < 0.2:
        return list(range(1, size))  # one byte at a time
    return [rng.randrange(size + 1) for _ in range(rng.randrange(4))]


def test_scan_agrees_with_libmagic_on_generated_documents(libmagic_json: magic.Magic) -> None:
    rng = random.Random(7)
    answers = {JSON_MIME: 0, NDJSON_MIME: 0, None: 0}
    for document in documents(seed=19, count=3000):
        want = libmagic_answer(libmagic_json, document)
        assert scan(document, random_cuts(rng, len(document))) == want, document
        answers[want] += 1
    assert min(answers.values()) > 100  # each answer is well exercised


@pytest.mark.parametrize(
    "document",
    [
        b"[1,]",
        b'{"a":1,}',
        b"[01, 1., .5, -0]",
        b"[-]",
        b"[1e]",
        b"[1E+5, 2e-3]",
        b'["\\u12"]',
        b'["\\u12g4"]',
        b'["\\q"]',
        b'["a\x00"]',
        b'["a\x01\xff"]',
        b"[tru]",
        b"[true false]",
        b"[truex]",
        b"{}",
        b"[]",
        b"  [] \n ",
        b"{} {}",
        b"{} []",
        b"{}\n{",
        b"[1]\n[2] garbage",
        b'"just a string"',
        b"42",
        b"{,}",
        b"[,]",
        b'{"a" 1}',
        b'{"a":}',
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"[" * (MAX_DEPTH + 1) + b"1" + b"]" * (MAX_DEPTH + 1),
        b"[" * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH,
        b"[]\n" + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b"[]\n" + b"[" * (MAX_DEPTH - 1) + b"1" + b"]" * (MAX_DEPTH - 1),
        b"[]\n" + b"[" * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH,
    ],
)
def test_scan_agrees_with_libmagic_on_edge_cases(libmagic_json: magic.Magic, document: bytes) -> None:
    want = libmagic_answer(libmagic_json, document)
    assert scan(document, []) == want
    assert scan(document, list(range(1, len(document)))) == want


def test_a_large_document_streams_in_pieces(libmagic_json: magic.Magic) -> None:
    records = [
        {"id": i, "name": f"item {i}", "tags": ["x"] * (i % 4), "nested": {"v": [i, None]}} for i in range(20000)
    ]
    document = json.dumps(records, indent=1).encode()
    assert libmagic_answer(libmagic_json, document) == JSON_MIME
    assert scan(document, list(range(0, len(document), 65536))) == JSON_MIME
    assert scan(document[:-2], list(range(0, len(document), 65536))) is None
