"""The framer against python-multipart, the parser it replaced: same verdict and parts on any body, any chunking.

Deliberate differences in what is accepted, each kept exact by `assert_same_as_python_multipart` below:

1. Preamble. RFC 2046 allows one before the first boundary; we accept only CR/LF bytes there (all any
   client sends) and refuse anything else. python-multipart, after a leading CR or LF, skips to the next
   `-` in the same chunk, so whether it accepts text there depends on how the body was chunked.
2. Transport padding (spaces, tabs) after the first boundary, before its CRLF: RFC 2046 allows it on every
   boundary line and we accept it; python-multipart accepts it on later boundary lines only.
3. Header size: we bound a part's whole header block (MAX_HEADER_BYTES, lines and blank line included);
   python-multipart bounds each header line to that many bytes, allowing 16 times as much per part.

Differences outside the property, by design (tests/test_multipart.py covers them):

4. A header block is checked once its blank line has arrived, not byte by byte, so a bad header may be
   refused a chunk later than python-multipart refused it; the verdict on the body is the same.
5. After a MalformedMultipart every later `feed` raises again; python-multipart carried on from a stale state.
6. `MultipartStream` refuses an empty boundary, one over 70 characters or one holding CR or LF with
   MalformedMultipart; python-multipart took up to 256 bytes and raised its own FormParserError beyond.
7. Messages differ, and so do the points where a part's data is cut into PART_DATA events; its bytes do not.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from rhinobox.errors import MalformedMultipart
from rhinobox.ingest.multipart import (
    MAX_HEADER_BYTES,
    MAX_HEADERS_PER_PART,
    PART_DATA,
    PART_END,
    PART_START,
    Event,
    MultipartStream,
    PartHeaders,
    _parse_part_headers,
)

logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)

EXAMPLES: Final = 400


# -- the reference: rhinobox/ingest/multipart.py as it was on python-multipart, verbatim but for names ------

_EXT_FILENAME = re.compile(r";\s*filename\*\s*=\s*([^;]+)", re.IGNORECASE)


def reference_part_headers(raw: dict[str, str]) -> PartHeaders:
    disposition = raw.get("content-disposition", "")
    kind, options = parse_options_header(disposition)
    if kind != b"form-data":
        raise MalformedMultipart("a part lacks Content-Disposition: form-data")
    filename = options.get(b"filename")
    extended = _EXT_FILENAME.search(disposition)
    if extended:  # RFC 5987 form; RFC 7578 forbids it, but some clients send it
        charset, _, rest = extended.group(1).strip().strip('"').partition("'")
        _, _, quoted = rest.partition("'")
        decoded = urllib.parse.unquote_to_bytes(quoted)
        if charset.strip().lower() in ("iso-8859-1", "latin1", "latin-1"):
            decoded = decoded.decode("latin-1").encode()
        filename = decoded  # UTF-8 (the only other charset RFC 8187 allows); decoded leniently later
    ctype = raw.get("content-type")
    return PartHeaders(
        field=options.get(b"name", b"").decode("utf-8", errors="replace"),
        filename=filename,
        content_type=ctype.strip().lower() if ctype else None,
        headers=raw,
    )


class ReferenceStream:
    """Feed body chunks; get back the events they completed, in order."""

    def __init__(self, boundary: bytes) -> None:
        self._events: list[Event] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self.complete = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_end": self._on_end,
            },
            max_header_count=MAX_HEADERS_PER_PART,
            max_header_size=MAX_HEADER_BYTES,
        )

    def feed(self, chunk: bytes) -> list[Event]:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise MalformedMultipart(f"malformed multipart body: {exc}") from None
        events, self._events = self._events, []
        return events

    def finish(self) -> None:
        if not self.complete:
            raise MalformedMultipart("the multipart body ended before its closing boundary")

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        self._events.append((PART_START, reference_part_headers(self._headers)))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append((PART_DATA, memoryview(data)[start:end]))

    def _on_part_end(self) -> None:
        self._events.append((PART_END, None))

    def _on_end(self) -> None:
        self.complete = True


# -- running a parser over a body --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a parser made of a body: accepted with these parts, or rejected with this reason."""

    parts: tuple[tuple[PartHeaders, bytes], ...] | None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.parts is not None


def chunked(body: bytes, sizes: list[int]) -> list[bytes]:
    chunks, position, index = [], 0, 0
    while position < len(body):
        size = sizes[index % len(sizes)] if sizes else len(body)
        chunks.append(body[position : position + size])
        position, index = position + size, index + 1
    return chunks


def run(stream: MultipartStream | ReferenceStream, chunks: list[bytes]) -> Outcome:
    parts: list[tuple[PartHeaders, bytes]] = []
    current: PartHeaders | None = None
    data = bytearray()
    try:
        for chunk in chunks:
            for kind, payload in stream.feed(chunk):
                if kind == PART_START:
                    assert isinstance(payload, PartHeaders)
                    assert current is None
                    current, data = payload, bytearray()
                elif kind == PART_DATA:
                    assert isinstance(payload, memoryview)
                    assert current is not None
                    assert len(payload) > 0
                    data += payload
                else:
                    assert kind == PART_END
                    assert current is not None
                    parts.append((current, bytes(data)))
                    current = None
        stream.finish()
    except MalformedMultipart as exc:
        return Outcome(None, exc.message)
    assert current is None
    assert stream.complete
    return Outcome(tuple(parts))


def ours(boundary: bytes, body: bytes, sizes: list[int]) -> Outcome:
    return run(MultipartStream(boundary), chunked(body, sizes))


def expected_outcome(boundary: bytes, body: bytes, sizes: list[int]) -> Outcome | None:
    """python-multipart's outcome, adjusted for the documented differences; None where we must reject."""
    dash_boundary = b"--" + boundary
    rest = body.lstrip(b"\r\n")
    if not dash_boundary.startswith(rest[: len(dash_boundary)]):
        return None  # difference 1: anything but CR/LF before the first boundary
    after = len(body) - len(rest) + len(dash_boundary)
    padded = re.compile(rb"[ \t]+(?=\r|\Z)").match(body, after)
    if padded:  # difference 2: python-multipart reads the first boundary line as if it had no padding
        body = body[:after] + body[padded.end() :]
    return run(ReferenceStream(boundary), chunked(body, sizes))


def assert_same_as_python_multipart(boundary: bytes, body: bytes, sizes: list[int]) -> Outcome:
    got = ours(boundary, body, sizes)
    assert got == ours(boundary, body, []), "chunking changed the framer's result"
    assert got == ours(boundary, body, [1]), "1-byte chunks changed the framer's result"
    expected = expected_outcome(boundary, body, sizes)
    if currently_in_test_context():  # for --hypothesis-show-statistics: how often each verdict comes up
        event("accepted" if got.accepted else f"rejected: {(got.error or '')[:40]}")
        event("reference " + ("n/a" if expected is None else "accepted" if expected.accepted else "rejected"))
    if expected is None:
        assert not got.accepted, "a preamble that is not CR/LF must be refused"
    elif got.error is not None and "headers exceed" in got.error:
        assert any(len(block) > MAX_HEADER_BYTES for block in header_blocks(body)), got.error  # difference 3
    elif expected.accepted or got.accepted:
        assert got == expected
    return got


def header_blocks(body: bytes) -> list[bytes]:
    """What follows each CRLF up to the next blank line (or the end): every header block, among other runs."""
    blocks = []
    for crlf in re.finditer(rb"\r\n", body):
        blank = body.find(b"\r\n\r\n", crlf.start())
        blocks.append(body[crlf.end() : len(body) if blank < 0 else blank + 4])
    return blocks


# -- generated bodies -----------------------------------------------------------------------------------------

BCHARS: Final = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"

boundaries = st.one_of(
    st.just(b"----rhinobox7MA4YWxkTrZu0gW"),
    st.text(alphabet=BCHARS, min_size=1, max_size=70).map(lambda text: text.encode()),
    st.sampled_from([b"a", b"-", b"--", b"\t-a", b"ab ab"]),
)

header_cases: st.SearchStrategy[Callable[[str], str]] = st.sampled_from(
    [str.lower, str.upper, str.title, lambda name: name]
)
spaces = st.sampled_from(["", " ", "  ", "\t"])
padding = st.sampled_from([b"", b"", b"", b" ", b"\t", b" \t "])
field_names = st.sampled_from(["file", "files", "upload", "category", "a;b", 'q"uote', "ünï", "", "sp ace"])
filenames = st.one_of(
    st.none(),
    st.sampled_from(["a.bin", "photo 1.jpg", "c:\\dir\\x.png", "\\\\srv\\x", "ünï.txt", "x;y", ""]),
)


@st.composite
def disposition_lines(draw: st.DrawFn) -> str:
    name = draw(field_names).replace('"', '\\"')
    value = f'form-data; name="{name}"'
    filename = draw(filenames)
    if filename is not None:
        value += f'; filename="{filename}"'
    if draw(st.booleans()) and draw(st.booleans()):
        value += "; filename*=UTF-8''%C3%BCber.txt"
    if draw(st.booleans()) and draw(st.booleans()):
        value = value.replace("; ", ";")
    return draw(header_cases)("Content-Disposition") + ":" + draw(spaces) + value + draw(spaces)


@st.composite
def header_blocks_strategy(draw: st.DrawFn) -> bytes:
    lines = [draw(disposition_lines())]
    extra_names = st.sampled_from(["Content-Type", "X-Extra", "content-length"])
    extras = draw(st.lists(extra_names, max_size=3) | st.lists(extra_names, min_size=14, max_size=16))
    for name in extras:
        value = draw(st.sampled_from(["image/JPEG", "text/plain; charset=utf-8", "", " 12 ", "a\nb"]))
        lines.insert(draw(st.integers(0, len(lines))), draw(header_cases)(name) + ":" + draw(spaces) + value)
    return "\r\n".join(lines).encode("utf-8")


@st.composite
def payloads_strategy(draw: st.DrawFn, boundary: bytes) -> bytes:
    delimiter = b"\r\n--" + boundary
    near = st.sampled_from(
        [b"\r", b"\n", b"\r\n", b"-", b"--", b"\r\n--", b"\r\n\r\n", delimiter + b"X", delimiter + b"\r",
         delimiter + b"-", delimiter + b"\rX", delimiter + b"-X", b"--" + boundary + b"\r\n"]
    )  # fmt: skip
    prefix = st.integers(1, len(delimiter) - 1).map(lambda k: delimiter[:k])
    piece = st.one_of(st.binary(max_size=40), near, prefix)
    return b"".join(draw(st.lists(piece, max_size=12)))


@dataclass(frozen=True)
class Generated:
    """A body framed with `boundary`, and what it was framed from (payloads may hold delimiters themselves)."""

    boundary: bytes
    body: bytes
    payloads: list[bytes]
    header_blocks: list[bytes]

    @property
    def well_formed(self) -> bool:
        fits = all(block.count(b"\r\n") < MAX_HEADERS_PER_PART for block in self.header_blocks)
        return fits and not any(holds_delimiter(payload + b"\r\n", self.boundary) for payload in self.payloads)


@st.composite
def bodies(draw: st.DrawFn) -> Generated:
    boundary = draw(boundaries)
    body = draw(st.sampled_from([b"", b"", b"\r\n", b"\n", b"\r", b"\r\n\r\n\n\r"]))
    body += b"--" + boundary
    payloads, blocks = [], []
    for _ in range(draw(st.integers(0, 4))):
        payloads.append(draw(payloads_strategy(boundary)))
        blocks.append(draw(header_blocks_strategy()))
        body += draw(padding) + b"\r\n" + blocks[-1] + b"\r\n\r\n" + payloads[-1] + b"\r\n--" + boundary
    body += b"--" + draw(st.sampled_from([b"", b"\r\n", b"\r\nepilogue\r\n--" + boundary + b"--\r\n"]))
    return Generated(boundary, body, payloads, blocks)


def holds_delimiter(payload: bytes, boundary: bytes) -> bool:
    return re.search(re.escape(b"\r\n--" + boundary) + rb"(\r\n|--|[ \t])", payload) is not None


chunk_sizes = st.one_of(
    st.just([1]), st.lists(st.integers(1, 64), min_size=1, max_size=20), st.lists(st.integers(1, 4096), max_size=5)
)


@st.composite
def mutated(draw: st.DrawFn, body: bytes, boundary: bytes) -> bytes:
    """`body` with a few bytes replaced, removed or inserted, favouring the bytes that frame a body."""
    interesting = st.sampled_from([b"\r", b"\n", b"-", b" ", b"\t", b":", b"\r\n", b"--" + boundary, b"x"])
    for _ in range(draw(st.integers(1, 4))):
        opening = min(body.find(b"\r\n", body.find(boundary)) + 1, len(body))  # mostly mutate past this line
        at = draw(st.integers(0, len(body)) if draw(st.integers(0, 7)) == 0 else st.integers(opening, len(body)))
        op = draw(st.sampled_from(["replace", "remove", "insert"]))
        if op == "replace":
            body = body[:at] + draw(interesting) + body[at + 1 :]
        elif op == "remove":
            body = body[:at] + body[at + draw(st.integers(1, 8)) :]
        else:
            body = body[:at] + draw(st.one_of(interesting, st.binary(max_size=4))) + body[at:]
    return body


fuzz_settings = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz_settings
@given(case=bodies(), sizes=chunk_sizes)
def test_well_formed_bodies_parse_as_python_multipart_parses_them(case: Generated, sizes: list[int]) -> None:
    got = assert_same_as_python_multipart(case.boundary, case.body, sizes)
    if case.well_formed:
        assert got.parts is not None, got.error
        assert [data for _, data in got.parts] == case.payloads


@fuzz_settings
@given(data=st.data(), case=bodies(), sizes=chunk_sizes)
def test_mutated_bodies_get_python_multipart_verdict(data: st.DataObject, case: Generated, sizes: list[int]) -> None:
    assert_same_as_python_multipart(case.boundary, data.draw(mutated(case.body, case.boundary)), sizes)


framing_tokens = st.sampled_from(
    [b"\r\n", b"\r", b"\n", b"-", b"--", b"--b", b"b", b" ", b"\t", b":", b"x", b"\r\n\r\n",
     b'Content-Disposition: form-data; name="f"', b"content-disposition:form-data", b"X-A: 1", b"\r\n--b\r\n",
     b"\r\n--b--"]
)  # fmt: skip


@fuzz_settings
@given(tokens=st.lists(framing_tokens, max_size=40), sizes=chunk_sizes)
def test_framing_soup_gets_python_multipart_verdict(tokens: list[bytes], sizes: list[int]) -> None:
    assert_same_as_python_multipart(b"b", b"--b\r\n" + b"".join(tokens), sizes)
    assert_same_as_python_multipart(b"b", b"".join(tokens), sizes)


# -- the Content-Disposition fast path reads what parse_options_header reads -----------------------------------

disposition_text = st.lists(
    st.sampled_from([*"fo-d; n=\"x\\*='\t\nü:F", "form-data", "name", "filename", "utf-8''%41", "c:\\"]), max_size=16
).map("".join)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    value=st.one_of(
        disposition_text,
        st.builds(lambda n, f: f'form-data; name="{n}"' + ("" if f is None else f'; filename="{f}"'),
                  disposition_text, st.none() | disposition_text),
    )
)  # fmt: skip
def test_content_disposition_reads_as_python_multipart_reads_it(value: str) -> None:
    raw = {"content-disposition": value.strip()}
    try:
        expected = reference_part_headers(dict(raw))
    except MalformedMultipart:
        expected = None
    try:
        got = _parse_part_headers(dict(raw))
    except MalformedMultipart:
        got = None
    assert got == expected


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Pad: " + b"p" * (MAX_HEADER_BYTES - 60),  # both accept
        b"X-Pad: " + b"p" * MAX_HEADER_BYTES,  # both refuse: a line over the limit
        b"".join(b"X-%d: " % i + b"v" * 600 + b"\r\n" for i in range(14)),  # difference 3: only we refuse
    ],
)
@pytest.mark.parametrize("sizes", [[], [1], [1000]])
def test_large_header_blocks_against_python_multipart(headers: bytes, sizes: list[int]) -> None:
    disposition = b'Content-Disposition: form-data; name="f"'
    body = b"--b\r\n" + headers.rstrip(b"\r\n") + b"\r\n" + disposition + b"\r\n\r\ndata\r\n--b--"
    assert_same_as_python_multipart(b"b", body, sizes)
