"""The streaming multipart parser: any framing and chunking of any parts parses back to the same parts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rhinobox.errors import MalformedMultipart, NotMultipart
from rhinobox.ingest.multipart import (
    MAX_HEADER_BYTES,
    MAX_HEADERS_PER_PART,
    PART_DATA,
    PART_END,
    PART_START,
    MultipartStream,
    PartHeaders,
    boundary_from_content_type,
)
from tests.helpers import MultipartPart, multipart

BOUNDARY = b"----rhinobox7MA4YWxkTrZu0gW"


def frame(parts: list[tuple[str, bytes | None, bytes]]) -> bytes:
    framed: list[MultipartPart] = []
    for field, filename, payload in parts:
        disposition = f'form-data; name="{field}"'.encode()
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        framed.append(({"Content-Disposition": disposition}, payload))
    return multipart(*framed, boundary=BOUNDARY.decode())


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


# -- framing details ---------------------------------------------------------------------------------------

DELIMITER = b"\r\n--" + BOUNDARY
DISPOSITION = b'Content-Disposition: form-data; name="file"; filename="a.bin"'


def body_with(*parts: bytes, opening: bytes = b"", close: bytes = b"--\r\n") -> bytes:
    """A body whose parts are given raw: each a boundary line's rest, headers, blank line and data."""
    return opening + b"--" + BOUNDARY + b"".join(part + DELIMITER for part in parts) + close


def part(data: bytes = b"x", headers: bytes = DISPOSITION, padding: bytes = b"") -> bytes:
    return padding + b"\r\n" + headers + b"\r\n\r\n" + data


def datas(body: bytes, chunk_sizes: list[int] | None = None) -> list[bytes]:
    return [data for _, data in parse(body, chunk_sizes or [])]


def test_an_empty_body_with_only_the_close_delimiter_is_complete() -> None:
    assert datas(b"--" + BOUNDARY + b"--") == []


def test_a_body_without_its_close_delimiter_is_malformed() -> None:
    with pytest.raises(MalformedMultipart, match="closing boundary"):
        parse(b"--" + BOUNDARY + part(b"abc") + DELIMITER + b"\r\n", [])


def test_a_body_framed_with_another_boundary_is_malformed() -> None:
    with pytest.raises(MalformedMultipart, match="does not start with its boundary"):
        parse(frame([("file", b"a", b"x")]).replace(BOUNDARY, b"other-boundary"), [])


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (b"", "Content-Disposition"),
        (b'Content-Disposition: attachment; name="file"', "Content-Disposition"),
        (b'Content-Type: text/plain\r\nX-Name: name="file"', "Content-Disposition"),
        (DISPOSITION + b"\r\nno colon here", "name: value"),
        (DISPOSITION + b"\r\nX-Folded: a\r\n b", "name: value"),  # obsolete line folding
        (DISPOSITION + b"\r\nX-Bad: a\rb", "bare CR"),
        (DISPOSITION + b"\r\n: empty name", "name: value"),
        (DISPOSITION + b"\r\nX Space: a", "name: value"),
        (b"\n" + DISPOSITION, "name: value"),
    ],
)
def test_bad_part_headers_are_malformed(headers: bytes, reason: str) -> None:
    with pytest.raises(MalformedMultipart, match=reason):
        parse(body_with(part(headers=headers)), [])


def test_a_bare_lf_in_a_header_value_is_kept_as_python_multipart_keeps_it() -> None:
    [(headers, _)] = parse(body_with(part(headers=DISPOSITION + b"\r\nX-Note: a\nb")), [])
    assert headers.headers["x-note"] == "a\nb"


def test_header_names_are_case_insensitive_and_values_stripped() -> None:
    headers_in = b'CONTENT-disposition:form-data; name="f"\r\nContent-TYPE: \t Image/PNG \t'
    [(headers, _)] = parse(body_with(part(headers=headers_in)), [])
    assert headers.field == "f"
    assert headers.content_type == "image/png"
    assert headers.headers == {"content-disposition": 'form-data; name="f"', "content-type": "Image/PNG"}


def test_sixteen_headers_pass_and_seventeen_are_too_many() -> None:
    extra = b"".join(b"\r\nX-%d: v" % i for i in range(MAX_HEADERS_PER_PART - 1))
    assert datas(body_with(part(headers=DISPOSITION + extra))) == [b"x"]
    with pytest.raises(MalformedMultipart, match="more than 16 headers"):
        parse(body_with(part(headers=DISPOSITION + extra + b"\r\nX-Last: v")), [])


def padded_headers(block_size: int) -> bytes:
    """Headers whose block (lines, CRLFs and the blank line after them) is exactly `block_size` bytes."""
    filler = block_size - len(DISPOSITION) - len(b"\r\nX-Pad: ") - len(b"\r\n\r\n")
    return DISPOSITION + b"\r\nX-Pad: " + b"p" * filler


@pytest.mark.parametrize("chunk", [1, 100, 65536])
def test_a_header_block_may_take_max_header_bytes_and_no_more(chunk: int) -> None:
    assert datas(body_with(part(headers=padded_headers(MAX_HEADER_BYTES))), [chunk]) == [b"x"]
    with pytest.raises(MalformedMultipart, match="headers exceed 8192 bytes"):
        parse(body_with(part(headers=padded_headers(MAX_HEADER_BYTES + 1))), [chunk])


def test_the_header_limit_is_per_part_not_per_line() -> None:
    """Stricter than python-multipart (8 KiB per line): no client sends 8 KiB of headers for one part."""
    lines = b"".join(b"\r\nX-%d: " % i + b"v" * 600 for i in range(14))
    with pytest.raises(MalformedMultipart, match="headers exceed"):
        parse(body_with(part(headers=DISPOSITION + lines)), [])


def test_a_header_block_with_no_end_is_refused_once_past_the_limit() -> None:
    stream = MultipartStream(BOUNDARY)
    stream.feed(b"--" + BOUNDARY + b"\r\n" + DISPOSITION + b"\r\n")

    def trickle() -> None:
        for _ in range(2 * MAX_HEADER_BYTES):
            stream.feed(b"X")

    with pytest.raises(MalformedMultipart, match="headers exceed"):
        trickle()
    assert len(stream._head) <= MAX_HEADER_BYTES + 2  # never more buffered than the limit and the CRLF before


class CountingStream(MultipartStream):
    """Counts the bytes searched for a header block's end, with limits high enough for 100 KB of headers."""

    max_header_bytes = 200_000
    max_headers_per_part = 10_000

    def __init__(self, boundary: bytes) -> None:
        super().__init__(boundary)
        self.searched = 0
        self.largest_buffer = 0

    def _find_blank_line(self, head: bytearray, start: int) -> int:
        self.searched += len(head) - start
        self.largest_buffer = max(self.largest_buffer, len(head))
        return super()._find_blank_line(head, start)


def test_a_header_block_trickled_byte_by_byte_is_searched_once() -> None:
    lines = b"".join(b"\r\nX-%05d: " % i + b"v" * 20 for i in range(3500))
    body = body_with(part(b"payload", headers=DISPOSITION + lines))
    assert len(lines) > 100_000
    stream = CountingStream(BOUNDARY)
    got = bytearray()
    for i in range(len(body)):
        for kind, payload in stream.feed(body[i : i + 1]):
            if kind == PART_DATA:
                assert isinstance(payload, memoryview)
                got += payload
    stream.finish()
    assert got == b"payload"
    assert stream.searched <= 4 * len(body)  # each byte searched once, plus 3 of overlap per feed
    assert stream.largest_buffer <= len(lines) + len(DISPOSITION) + 8


def test_a_flood_of_leading_newlines_is_skipped() -> None:
    opening = b"\r\n" * 100_000 + b"\n\r\r\n\n"
    body = body_with(part(b"abc"), opening=opening)
    assert datas(body) == [b"abc"]
    assert datas(body, [1, 7, 1000]) == [b"abc"]


@pytest.mark.parametrize("opening", [b"preamble\r\n", b" ", b"\r\nx\r\n", b"-", b"\r\n---"])
def test_anything_but_newlines_before_the_first_boundary_is_refused(opening: bytes) -> None:
    """Stricter than python-multipart, which after a CR or LF skips to the next `-` in the same chunk."""
    with pytest.raises(MalformedMultipart, match="does not start with its boundary"):
        parse(body_with(part(), opening=opening), [])


@pytest.mark.parametrize("padding", [b" ", b"\t", b" \t  "])
def test_transport_padding_after_any_boundary_is_accepted(padding: bytes) -> None:
    body = body_with(part(b"one", padding=padding), part(b"two", padding=padding))
    for chunk in ([], [1], [3]):
        assert datas(body, chunk) == [b"one", b"two"]


@pytest.mark.parametrize("bad", [b" x\r\n", b" \r\r\n", b"\r\r\n", b"x\r\n", b" --"])
def test_a_first_boundary_line_with_junk_is_refused(bad: bytes) -> None:
    with pytest.raises(MalformedMultipart, match="boundary line does not end in CRLF"):
        parse(b"--" + BOUNDARY + bad + DISPOSITION + b"\r\n\r\nx" + DELIMITER + b"--", [])


def test_padding_then_junk_after_a_later_boundary_is_refused() -> None:
    with pytest.raises(MalformedMultipart, match="boundary line does not end in CRLF"):
        parse(body_with(part(b"one"), part(b"two", padding=b"  x")), [])


def test_the_epilogue_is_ignored() -> None:
    stream = MultipartStream(BOUNDARY)
    events = stream.feed(body_with(part(b"abc"), close=b"--epilogue\r\n--" + BOUNDARY + b"\r\n"))
    assert [kind for kind, _ in events] == [PART_START, PART_DATA, PART_END]
    assert stream.complete
    assert stream.feed(b"--" + BOUNDARY + b"\r\nanything at all") == []
    stream.finish()


@pytest.mark.parametrize(
    "lookalike",
    [DELIMITER + b"X", DELIMITER + b"\rX", DELIMITER + b"-X", DELIMITER[:-1], b"--" + BOUNDARY + b"\r\n", b"\r\n\r\n"],
)
def test_delimiter_lookalikes_in_data_are_data(lookalike: bytes) -> None:
    """`\\r\\n--boundary` followed by other than CRLF, `--` or padding is data, as python-multipart reads it."""
    data = b"head" + lookalike + b"tail" + lookalike
    body = body_with(part(data), part(lookalike))
    for chunk in ([], [1], [2], [len(DELIMITER)]):
        assert datas(body, chunk) == [data, lookalike]


def test_a_delimiter_split_anywhere_between_two_chunks_is_found() -> None:
    first = b"first" + DELIMITER[:-1] + DELIMITER + b"X" + DELIMITER + b"-" + DELIMITER + b"\rX"
    body = body_with(part(first), part(b"second"))
    for split in range(len(body) + 1):
        stream = MultipartStream(BOUNDARY)
        events = stream.feed(body[:split]) + stream.feed(body[split:])
        stream.finish()
        kinds = [kind for kind, _ in events]
        assert kinds.count(PART_START) == kinds.count(PART_END) == 2
        data = [bytes(p) for k, p in events if k == PART_DATA and isinstance(p, memoryview)]
        assert b"".join(data) == first + b"second"


def test_a_part_with_no_boundary_in_sight_streams_out() -> None:
    """Data is emitted as it arrives; only a tail that may start a delimiter (and one byte more) is held."""
    stream = MultipartStream(BOUNDARY)
    stream.feed(b"--" + BOUNDARY + part(b""))
    fed = emitted = 0
    patterns = [bytes(range(256)) * 256, (DELIMITER[:-1] + b"\r\n--") * 1000, DELIMITER + b"\r", b"\r" * 65536]
    for chunk in patterns * 8:
        fed += len(chunk)
        for kind, payload in stream.feed(chunk):
            assert kind == PART_DATA
            assert isinstance(payload, memoryview)
            emitted += len(payload)
        assert fed - emitted <= len(DELIMITER) + 1


def test_data_views_survive_later_feeds() -> None:
    body = body_with(part(b"abc" + DELIMITER[:5] + b"def"), part(b"ghi"))
    stream = MultipartStream(BOUNDARY)
    views: list[memoryview] = []
    for i in range(0, len(body), 3):
        views += [p for k, p in stream.feed(body[i : i + 3]) if k == PART_DATA and isinstance(p, memoryview)]
    assert all(view.readonly for view in views)
    assert b"".join(views) == b"abc" + DELIMITER[:5] + b"defghi"


def test_a_malformed_stream_stays_malformed() -> None:
    stream = MultipartStream(BOUNDARY)
    with pytest.raises(MalformedMultipart):
        stream.feed(b"garbage")
    with pytest.raises(MalformedMultipart, match="already"):
        stream.feed(b"--" + BOUNDARY + b"--")
    assert not stream.complete


@pytest.mark.parametrize("boundary", [b"", b"x" * 71, b"a\r\nb", b"a\nb"])
def test_an_invalid_boundary_is_refused(boundary: bytes) -> None:
    with pytest.raises(MalformedMultipart, match="boundary"):
        MultipartStream(boundary)


def test_filenames_read_as_before() -> None:
    headers_in = [
        b'Content-Disposition: form-data; name="f"; filename="c:\\\\dir\\\\x.png"',
        b'Content-Disposition: form-data; name="f"; filename="a.txt"; filename*=UTF-8\'\'%C3%BCber.txt',
        b"Content-Disposition: form-data; name=\"f\"; filename*=iso-8859-1''%FCber.txt",
        b'Content-Disposition: form-data; name="f"; filename=""',
        b'Content-Disposition: form-data; name="f"',
        b'Content-Disposition: form-data; name="f"; filename="a\\"b"',
    ]
    parsed = [headers.filename for headers, _ in parse(body_with(*(part(headers=h) for h in headers_in)), [])]
    assert parsed == [b"x.png", "über.txt".encode(), "über.txt".encode(), b"", None, b'a"b']


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=\u20ac",  # a UTF-8 byte sequence aiohttp decodes to U+20AC
        "multipart/form-data; boundary=a\udcff",  # a byte aiohttp cannot decode (surrogateescape)
        "text/plain; charset=\u20ac",  # not multipart at all: should be 415 not_multipart
    ],
)
def test_a_content_type_outside_latin1_is_refused_cleanly(content_type: str) -> None:
    """aiohttp decodes header bytes as UTF-8; python-multipart's parser would raise UnicodeEncodeError (a 500)."""
    expected = NotMultipart if content_type.startswith("text/") else MalformedMultipart
    with pytest.raises(expected):
        boundary_from_content_type(content_type)
