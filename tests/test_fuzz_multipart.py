"""Fuzzing the multipart framer (hypothesis): generated bodies, mutated, in any chunking, and over HTTP.

What must hold for any input: the framer raises nothing but `MalformedMultipart`; how the body is cut
into chunks never changes the outcome; a well-formed body (any boundary, extra headers, padding,
delimiter look-alikes in the data) parses back to exactly its parts; and a real server answers any
of these bodies without a 5xx, in the JSON shape. Example counts bound the run to seconds.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rhinobox.errors import MalformedMultipart
from rhinobox.ingest.multipart import (
    MAX_BOUNDARY_CHARS,
    PART_DATA,
    PART_END,
    PART_START,
    MultipartStream,
    PartHeaders,
)
from tests.server_process import RhinoBoxProcess

BOUNDARY_CHARS: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,./:=?-"
FIELDS: Final = ("file", "files", "upload", "category", "comment")


@dataclass(frozen=True)
class Part:
    field: str
    filename: bytes | None
    extra_headers: tuple[tuple[str, str], ...]
    data: bytes


@dataclass(frozen=True)
class Body:
    boundary: bytes
    parts: tuple[Part, ...]
    raw: bytes


# -- generating well-formed bodies -------------------------------------------------------------------

boundaries = st.text(BOUNDARY_CHARS, min_size=1, max_size=MAX_BOUNDARY_CHARS).map(str.encode)
filenames = st.binary(min_size=1, max_size=40).filter(lambda b: not set(b) & set(b'"\r\n\\;'))
extra_headers = st.lists(
    st.sampled_from(
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Type", "image/png"),
            ("Content-Transfer-Encoding", "binary"),
            ("X-Anything", "  padded value  "),
        ]
    ),
    max_size=3,
    unique_by=lambda header: header[0],
).map(tuple)


@st.composite
def part_data(draw: st.DrawFn, boundary: bytes) -> bytes:
    """Bytes, sometimes with pieces of the delimiter inside (a near-miss must stay data)."""
    pieces = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=600),
                st.sampled_from([b"\r\n--", b"--" + boundary, b"\r\n--" + boundary[:-1], b"\r", b"\n", b"--"]),
            ),
            max_size=6,
        )
    )
    data = b"".join(pieces)
    return data.replace(b"\r\n--" + boundary, b"\r\n-+" + boundary)  # never the real delimiter


@st.composite
def bodies(draw: st.DrawFn) -> Body:
    boundary = draw(boundaries)
    parts = tuple(
        Part(
            draw(st.sampled_from(FIELDS)),
            draw(st.one_of(st.none(), filenames)),
            draw(extra_headers),
            draw(part_data(boundary)),
        )
        for _ in range(draw(st.integers(0, 6)))
    )
    padding = st.sampled_from([b"", b" ", b"\t", b" \t "])
    out = draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]))  # newlines before the first boundary
    for part in parts:
        out += b"--" + boundary + draw(padding) + b"\r\n"
        disposition = f'form-data; name="{part.field}"'.encode()
        if part.filename is not None:
            disposition += b'; filename="' + part.filename + b'"'
        out += b"Content-Disposition: " + disposition + b"\r\n"
        out += b"".join(f"{name}: {value}\r\n".encode() for name, value in part.extra_headers)
        out += b"\r\n" + part.data + b"\r\n"
    out += b"--" + boundary + b"--" + draw(st.sampled_from([b"", b"\r\n", b"\r\nepilogue --" + boundary]))
    return Body(boundary, parts, out)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A well-formed body with a few bytes flipped, inserted, deleted or repeated."""
    body = draw(bodies())
    raw = bytearray(body.raw)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        if kind == "flip" and at < len(raw):
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            raw[at:at] = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b"--", b'"', b":", b"\x00", body.boundary]))
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 8))]
        elif kind == "repeat":
            raw[at:at] = raw[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del raw[at:]
    return body.boundary, bytes(raw)


chunkings = st.lists(st.integers(min_value=1, max_value=2000), max_size=40)

# -- running the framer ------------------------------------------------------------------------------

Outcome = tuple[tuple[str, bytes | None, bytes], ...] | str  # the parts, or the error's message


def frame(boundary: bytes, raw: bytes, chunk_sizes: list[int]) -> Outcome:
    """The parts the framer reads from `raw` cut at `chunk_sizes`, or its MalformedMultipart's message."""
    stream = MultipartStream(boundary)
    reader = PartReader()
    position, sizes = 0, iter(chunk_sizes)
    while position < len(raw):
        size = next(sizes, 65536)
        try:
            events = stream.feed(raw[position : position + size])
        except MalformedMultipart as exc:
            with pytest.raises(MalformedMultipart):
                stream.feed(b"--" + boundary + b"--\r\n")  # a failed stream stays failed
            return exc.message
        for kind, payload in events:
            reader.take(kind, payload)
        position += size
    try:
        stream.finish()
    except MalformedMultipart as exc:
        return exc.message
    assert reader.current is None
    return tuple(reader.parts)


class PartReader:
    """Events back into parts, checking their order: START, any DATA, END, for each part."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, bytes | None, bytes]] = []
        self.current: PartHeaders | None = None
        self._data = bytearray()

    def take(self, kind: int, payload: PartHeaders | memoryview | None) -> None:
        if kind == PART_START:
            assert self.current is None
            assert isinstance(payload, PartHeaders)
            self.current, self._data = payload, bytearray()
        elif kind == PART_DATA:
            assert self.current is not None
            assert isinstance(payload, memoryview)
            self._data += payload
        else:
            assert kind == PART_END
            assert self.current is not None
            assert payload is None
            self.parts.append((self.current.field, self.current.filename, bytes(self._data)))
            self.current = None


FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@FUZZ
@given(body=bodies(), chunk_sizes=chunkings)
def test_a_well_formed_body_round_trips_in_any_chunking(body: Body, chunk_sizes: list[int]) -> None:
    parsed = frame(body.boundary, body.raw, chunk_sizes)
    assert parsed == tuple((p.field, p.filename, p.data) for p in body.parts)


@FUZZ
@given(case=mutated(), chunk_sizes=chunkings)
def test_a_mutated_body_fails_only_as_malformed_and_the_same_in_any_chunking(
    case: tuple[bytes, bytes], chunk_sizes: list[int]
) -> None:
    boundary, raw = case
    assert frame(boundary, raw, chunk_sizes) == frame(boundary, raw, [len(raw) or 1])


@FUZZ
@given(raw=st.binary(max_size=2000), boundary=boundaries, chunk_sizes=chunkings)
def test_arbitrary_bytes_fail_only_as_malformed(raw: bytes, boundary: bytes, chunk_sizes: list[int]) -> None:
    assert frame(boundary, raw, chunk_sizes) == frame(boundary, raw, [len(raw) or 1])


# -- over HTTP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhinoBoxProcess]:
    data_dir = tmp_path_factory.mktemp("fuzz-multipart") / "data"
    with RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="never") as process:
        yield process


def post(url: str, content_type: str, body: bytes) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        connection.request("POST", "/ingest", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(case=st.one_of(mutated(), bodies().map(lambda body: (body.boundary, body.raw))))
def test_the_server_answers_any_such_body_without_a_server_error(
    server: RhinoBoxProcess, case: tuple[bytes, bytes]
) -> None:
    boundary, raw = case
    status, content_type, answer = post(server.url, f'multipart/form-data; boundary="{boundary.decode()}"', raw)
    assert status < 500, answer
    assert content_type.startswith("application/json")
    body = json.loads(answer)
    assert set(body) in ({"error"}, {"results", "stored", "duplicates", "failed"}), body


def test_the_fuzzed_server_left_no_spool_files(server: RhinoBoxProcess) -> None:
    assert list(Path(server.data_dir, "tmp").glob("*")) == []
