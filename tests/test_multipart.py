"""The streaming multipart parser: any framing and chunking of any parts parses back to the same parts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhinobox.errors import MalformedMultipart, NotMultipart
from rhinobox.ingest.multipart import (
    PART_DATA,
    PART_END,
    PART_START,
    MultipartStream,
    PartHeaders,
    boundary_from_content_type,
)

BOUNDARY = b"----rhinobox7MA4YWxkTrZu0gW"


def frame(parts: list[tuple[str, bytes | None, bytes]]) -> bytes:
    body = b""
    for field, filename, payload in parts:
        disposition = f'form-data; name="{field}"'.encode()
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + payload + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


def parse(body: bytes, chunk_sizes: list[int]) -> list[tuple[PartHeaders, bytes]]:
    stream = MultipartStream(BOUNDARY)
    parts: list[tuple[PartHeaders, bytes]] = []
    current: PartHeaders | None = None
    data = bytearray()
    position, sizes = 0, iter(chunk_sizes)
    while position < len(body):
        size = next(sizes, 65536)
        for kind, payload in stream.feed(body[position : position + size]):
            if kind == PART_START:
                assert isinstance(payload, PartHeaders)
                current, data = payload, bytearray()
            elif kind == PART_DATA:
                assert isinstance(payload, memoryview)
                data += payload
            elif kind == PART_END:
                assert current is not None
                parts.append((current, bytes(data)))
        position += size
    stream.finish()
    return parts


names = st.binary(min_size=1, max_size=40).filter(lambda b: b'"' not in b and b"\r" not in b and b"\n" not in b)
fields = st.sampled_from(["file", "files", "upload", "category", "comment"])
parts_strategy = st.lists(st.tuples(fields, st.one_of(st.none(), names), st.binary(max_size=3000)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(parts=parts_strategy, chunk_sizes=st.lists(st.integers(min_value=1, max_value=5000), max_size=50))
def test_any_parts_any_chunking_round_trip(
    parts: list[tuple[str, bytes | None, bytes]], chunk_sizes: list[int]
) -> None:
    parsed = parse(frame(parts), chunk_sizes)
    assert len(parsed) == len(parts)
    for (headers, data), (field, filename, payload) in zip(parsed, parts, strict=True):
        assert headers.field == field
        assert data == payload
        if filename is None:
            assert headers.filename is None
        else:
            assert headers.filename is not None


@given(st.binary(max_size=500))
def test_garbage_never_crashes_the_parser(garbage: bytes) -> None:
    stream = MultipartStream(BOUNDARY)
    try:
        stream.feed(garbage)
        stream.finish()
    except MalformedMultipart:
        pass


def test_truncated_body_is_malformed() -> None:
    body = frame([("file", b"a.bin", b"x" * 100)])
    with pytest.raises(MalformedMultipart):
        parse(body[:-10], [])


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        (None, NotMultipart),
        ("application/json", NotMultipart),
        ("multipart/mixed; boundary=x", NotMultipart),
        ("multipart/form-data", MalformedMultipart),
        ("multipart/form-data; boundary=" + "x" * 71, MalformedMultipart),
    ],
)
def test_content_type_checks(content_type: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        boundary_from_content_type(content_type)


def test_boundary_is_read() -> None:
    assert boundary_from_content_type('multipart/form-data; boundary="abc def"') == b"abc def"
