"""The one spelling of a content hash: 64 lowercase hex characters of BLAKE3-256."""

from __future__ import annotations

import re
from typing import Final

from rhinobox.errors import BadHash

__all__ = ["DIGEST_HEX_LEN", "is_digest", "require_digest"]

DIGEST_HEX_LEN: Final = 64
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{64}")


def is_digest(value: str) -> bool:
    """True if `value` is a well-formed digest (lowercase only: one hash has one name)."""
    return _DIGEST_RE.fullmatch(value) is not None


def require_digest(value: str) -> str:
    """Return `value` if it is a digest, else raise `BadHash`."""
    if not is_digest(value):
        raise BadHash()
    return value
