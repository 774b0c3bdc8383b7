"""Fuzzing the resumable-upload header parsers (hypothesis): any header text gives a value or a documented 4xx.

The parsers see raw client headers before anything else does; an exception other than their own
errors would be a 500. Metadata written by `encode_metadata` must parse back to itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from rhinobox.errors import InvalidUploadHeader, RhinoBoxError, UnsupportedChecksum, UnsupportedProtocolVersion
from rhinobox.http.errors import status_for
from rhinobox.http.upload_headers import (
    MAX_METADATA_KEYS,
    encode_metadata,
    parse_checksum,
    parse_declared_digest,
    parse_metadata,
    parse_offset,
    parse_upload_complete,
    parse_upload_length,
    protocol_of,
)

DOCUMENTED: Final = (InvalidUploadHeader, UnsupportedChecksum, UnsupportedProtocolVersion)
HEADER_NAMES: Final = (
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
# What a header value may hold after aiohttp's parser: latin-1 text without CR, LF or NUL.
header_values = st.one_of(
    st.text(st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters="\r\n"), max_size=120),
    st.sampled_from(["1.0.0", "5", "6", "0", "1", "?0", "?1", "sha256 ", "blake3=", " 18446744073709551616 "]),
)
headers = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=len(HEADER_NAMES))


def outcome(parse: Callable[[], object]) -> None:
    """`parse()` returns, or raises one of the documented errors, which answer a 4xx (anything else fails)."""
    error: RhinoBoxError
    try:
        parse()
        return
    except DOCUMENTED as exc:
        error = exc
    assert 400 <= status_for(error) < 500


@settings(max_examples=1500, deadline=None, database=None)
@given(given_headers=headers, metadata=st.one_of(st.none(), header_values))
def test_any_headers_parse_or_fail_with_a_documented_4xx(given_headers: dict[str, str], metadata: str | None) -> None:
    outcome(lambda: protocol_of(given_headers))
    outcome(lambda: parse_offset(given_headers))
    outcome(lambda: parse_upload_length(given_headers, required=True))
    outcome(lambda: parse_upload_complete(given_headers))
    outcome(lambda: parse_checksum(given_headers))
    outcome(lambda: parse_metadata(metadata))
    outcome(lambda: parse_declared_digest(given_headers, {}))


# Keys: visible ASCII without the comma (tus) and without `"`, which the server also refuses.
metadata_keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=',"'), min_size=1)
metadata_dicts = st.dictionaries(metadata_keys, st.text(max_size=60), max_size=MAX_METADATA_KEYS)


@settings(max_examples=800, deadline=None, database=None)
@given(metadata=metadata_dicts)
def test_encoded_metadata_parses_back_to_itself(metadata: Mapping[str, str]) -> None:
    assert parse_metadata(encode_metadata(metadata)) == metadata
