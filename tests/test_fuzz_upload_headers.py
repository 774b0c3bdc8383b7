"""Generated input for the resumable-upload header parsers: a client's error, never a server error."""

from __future__ import annotations

import string
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from rhinobox.errors import InvalidUploadHeader, RhinoBoxError
from rhinobox.http.upload_headers import (
    encode_metadata,
    parse_checksum,
    parse_declared_digest,
    parse_metadata,
    parse_offset,
    parse_upload_complete,
    parse_upload_length,
    protocol_of,
)

HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200)
HEADER_NAMES = (
    "Tus-Resumable",
    "Upload-Draft-Interop-Version",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Complete",
    "Upload-Checksum",
    "Content-Digest",
    "Repr-Digest",
)
KEYS = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=20)
EXAMPLES = settings(max_examples=400, deadline=None)


@EXAMPLES
@given(st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_TEXT), st.one_of(st.none(), HEADER_TEXT))
def test_any_header_values_parse_or_are_refused_cleanly(headers: dict[str, str], raw_metadata: str | None) -> None:
    parsers: list[Callable[[], object]] = [
        lambda: protocol_of(headers),
        lambda: parse_offset(headers),
        lambda: parse_upload_length(headers, required=True),
        lambda: parse_upload_complete(headers),
        lambda: parse_checksum(headers),
        lambda: parse_declared_digest(headers, parse_metadata(raw_metadata)),
    ]
    refusals: list[RhinoBoxError] = []
    for parse in parsers:
        try:
            value = parse()
        except RhinoBoxError as exc:
            refusals.append(exc)
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            assert 0 <= value < 2**63
    assert all(exc.message for exc in refusals)


@EXAMPLES
@given(st.dictionaries(KEYS, st.text(max_size=100), max_size=10))
def test_metadata_round_trips(metadata: dict[str, str]) -> None:
    assert parse_metadata(encode_metadata(metadata)) == metadata


@EXAMPLES
@given(st.text(max_size=300))
def test_metadata_never_raises_anything_but_its_error(raw: str) -> None:
    try:
        parsed = parse_metadata(raw)
    except InvalidUploadHeader:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())
