"""Digests a client declares for a file (`Content-Digest` or a `<field>.blake3` form field), checked before commit."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

from rhinobox.blobs.digest import is_digest
from rhinobox.errors import DigestMismatch, MalformedMultipart
from rhinobox.ingest.entry import FileEntry
from rhinobox.ingest.multipart import PartHeaders

__all__ = [
    "CONTENT_DIGEST_HEADER",
    "DIGEST_FIELD_SUFFIX",
    "digest_mismatch",
    "expected_digest",
    "parse_content_digest",
]

CONTENT_DIGEST_HEADER: Final = "content-digest"
DIGEST_FIELD_SUFFIX: Final = ".blake3"
_BLAKE3_BYTES: Final = 32


def expected_digest(headers: PartHeaders, fields: Mapping[str, str]) -> str | None:
    """The digest a client declared for a file part: `Content-Digest` header or `<field>.blake3` field."""
    declared = headers.headers.get(CONTENT_DIGEST_HEADER)
    if declared is not None:
        return parse_content_digest(declared)
    field_value = fields.get(headers.field + DIGEST_FIELD_SUFFIX)
    if field_value is not None:
        value = field_value.strip().lower()
        if not is_digest(value):
            raise MalformedMultipart(f"field {headers.field + DIGEST_FIELD_SUFFIX!r} is not a BLAKE3 hex digest")
        return value
    return None


def digest_mismatch(entry: FileEntry) -> DigestMismatch:
    """The error for content that does not hash to what its client declared."""
    return DigestMismatch(f"content hashes to {entry.digest}, not the declared {entry.expected_digest}")


def parse_content_digest(value: str) -> str:
    """`blake3=<64 hex>` or RFC 9530 style `blake3=:<base64>:`; other algorithms are refused."""
    for item in value.split(","):
        algorithm, _, encoded = item.strip().partition("=")
        if algorithm.strip().lower() != "blake3":
            continue
        encoded = encoded.strip()
        if encoded.startswith(":") and encoded.endswith(":") and len(encoded) > 2:
            try:
                raw = base64.b64decode(encoded[1:-1], validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) == _BLAKE3_BYTES:
                return raw.hex()
        elif is_digest(encoded.lower()):
            return encoded.lower()
        raise MalformedMultipart("Content-Digest blake3 value must be 64 hex or :base64: of 32 bytes")
    raise MalformedMultipart("Content-Digest must carry a blake3 digest")
