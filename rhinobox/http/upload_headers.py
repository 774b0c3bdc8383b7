"""The headers of resumable uploads (tus 1.0 and the IETF draft), parsed strictly into plain values.

Every malformed value is a 400 `invalid_upload_header` naming the header; nothing here touches storage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from enum import Enum
from typing import Final

from rhinobox.blobs.digest import is_digest
from rhinobox.errors import InvalidUploadHeader, MalformedMultipart, UnsupportedChecksum, UnsupportedProtocolVersion
from rhinobox.ingest.digests import parse_content_digest
from rhinobox.ingest.resumable import Checksum

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "DRAFT_INTEROP_VERSIONS",
    "TUS_VERSION",
    "Protocol",
    "encode_metadata",
    "parse_checksum",
    "parse_declared_digest",
    "parse_metadata",
    "parse_offset",
    "parse_upload_complete",
    "parse_upload_length",
    "protocol_of",
]

TUS_VERSION: Final = "1.0.0"
# tus-js-client's `ietf-draft-03` sends 5, `ietf-draft-05` sends 6: the versions tested here.
DRAFT_INTEROP_VERSIONS: Final = ("5", "6")
CHECKSUM_ALGORITHMS: Final = ("sha1", "sha256", "sha512", "md5")
MAX_METADATA_KEYS: Final = 32
METADATA_DIGEST_KEY: Final = "blake3"
_DIGITS: Final = re.compile(r"[0-9]{1,19}")  # below 2**63: a length or offset, never a bignum
_METADATA_KEY: Final = re.compile(r"[!-+\--~]+")  # visible ASCII without space and comma (tus 1.0)


class Protocol(Enum):
    """Which resumable-upload protocol a request speaks."""

    TUS = "tus"
    DRAFT = "ietf-draft"


def protocol_of(headers: Mapping[str, str]) -> Protocol:
    """tus if `Tus-Resumable` is sent, the IETF draft if `Upload-Draft-Interop-Version` is; else 412."""
    tus = headers.get("Tus-Resumable")
    if tus is not None:
        if tus.strip() != TUS_VERSION:
            raise UnsupportedProtocolVersion(f"this server speaks tus {TUS_VERSION}, not {tus.strip()[:20]!r}")
        return Protocol.TUS
    draft = headers.get("Upload-Draft-Interop-Version")
    if draft is not None:
        if draft.strip() not in DRAFT_INTEROP_VERSIONS:
            versions = ", ".join(DRAFT_INTEROP_VERSIONS)
            raise UnsupportedProtocolVersion(f"draft interop versions {versions} are supported, not {draft[:20]!r}")
        return Protocol.DRAFT
    raise UnsupportedProtocolVersion(f"send Tus-Resumable: {TUS_VERSION} (or Upload-Draft-Interop-Version)")


def _number(name: str, raw: str) -> int:
    value = raw.strip()
    if not _DIGITS.fullmatch(value):
        raise InvalidUploadHeader(f"{name} must be a non-negative integer")
    return int(value)


def parse_offset(headers: Mapping[str, str]) -> int:
    raw = headers.get("Upload-Offset")
    if raw is None:
        raise InvalidUploadHeader("Upload-Offset is required")
    return _number("Upload-Offset", raw)


def parse_upload_length(headers: Mapping[str, str], *, required: bool) -> int | None:
    """`Upload-Length`, or None with `Upload-Defer-Length: 1` (or when not `required`)."""
    raw = headers.get("Upload-Length")
    deferred = headers.get("Upload-Defer-Length")
    if raw is not None:
        if deferred is not None:
            raise InvalidUploadHeader("send Upload-Length or Upload-Defer-Length, not both")
        return _number("Upload-Length", raw)
    if deferred is not None:
        if deferred.strip() != "1":
            raise InvalidUploadHeader("Upload-Defer-Length must be 1")
        return None
    if required:
        raise InvalidUploadHeader("Upload-Length (or Upload-Defer-Length: 1) is required")
    return None


def parse_upload_complete(headers: Mapping[str, str]) -> bool | None:
    """The draft's `Upload-Complete` structured boolean (`?1` or `?0`), None if absent."""
    raw = headers.get("Upload-Complete")
    if raw is None:
        return None
    value = raw.strip()
    if value not in ("?0", "?1"):
        raise InvalidUploadHeader("Upload-Complete must be ?0 or ?1")
    return value == "?1"


def parse_metadata(raw: str | None) -> dict[str, str]:
    """tus `Upload-Metadata`: `key base64value` pairs separated by commas; values must be UTF-8 text."""
    metadata: dict[str, str] = {}
    if raw is None or not raw.strip():
        return metadata
    for pair in raw.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not _METADATA_KEY.fullmatch(key):
            raise InvalidUploadHeader("Upload-Metadata keys must be non-empty ASCII without spaces or commas")
        if key in metadata:
            raise InvalidUploadHeader(f"Upload-Metadata key {key!r} appears twice")
        if len(metadata) >= MAX_METADATA_KEYS:
            raise InvalidUploadHeader(f"Upload-Metadata may have at most {MAX_METADATA_KEYS} keys")
        try:
            metadata[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise InvalidUploadHeader(f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text") from None
    return metadata


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """The metadata as `Upload-Metadata` carries it (for HEAD answers)."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key for key, value in metadata.items()
    )


def parse_declared_digest(headers: Mapping[str, str], metadata: Mapping[str, str]) -> str | None:
    """The content's BLAKE3 a creation declares: metadata `blake3`, or `Content-Digest`/`Repr-Digest`."""
    declared = metadata.get(METADATA_DIGEST_KEY)
    if declared is not None:
        declared = declared.strip().lower()
        if not is_digest(declared):
            raise InvalidUploadHeader("Upload-Metadata blake3 must be the 64-hex BLAKE3 of the content")
        return declared
    for name in ("Repr-Digest", "Content-Digest"):
        value = headers.get(name)
        if value is not None:
            try:
                return parse_content_digest(value)
            except MalformedMultipart as exc:
                raise InvalidUploadHeader(f"{name}: {exc.message}") from None
    return None


def parse_checksum(headers: Mapping[str, str]) -> Checksum | None:
    """tus `Upload-Checksum: <algorithm> <base64 digest>`, None if absent."""
    raw = headers.get("Upload-Checksum")
    if raw is None:
        return None
    algorithm, _, encoded = raw.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise UnsupportedChecksum(f"Upload-Checksum algorithms: {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUploadHeader("Upload-Checksum digest is not base64") from None
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise InvalidUploadHeader(f"Upload-Checksum {algorithm} digest has the wrong length")
    return Checksum(algorithm, digest)
