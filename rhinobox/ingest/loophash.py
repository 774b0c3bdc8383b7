"""BLAKE3 of a small file on the event loop, without letting go of the GIL.

blake3-py releases the GIL for any update of 2 KiB or more. On the event loop that is a trap: the
hash takes a microsecond, but getting the GIL back from a worker thread busy in Python can take a
whole switch interval. Measured here with one busy Python thread: 4 KiB hashed whole took 260-330 us
on the caller, in updates under the threshold 11 us. So the loop feeds the hasher in pieces that
keep the GIL; large files are hashed on workers, where letting go is what is wanted.
"""

from __future__ import annotations

from typing import Final

import blake3

__all__ = ["GIL_KEEPING_PIECE", "digest_keeping_gil"]

GIL_KEEPING_PIECE: Final = 2047  # blake3-py (1.0) releases the GIL from 2048 bytes per update


def digest_keeping_gil(data: memoryview) -> str:
    """The hex BLAKE3 digest of `data`, computed without releasing the GIL."""
    if len(data) <= GIL_KEEPING_PIECE:
        return blake3.blake3(data).hexdigest()
    hasher = blake3.blake3()
    for start in range(0, len(data), GIL_KEEPING_PIECE):
        hasher.update(data[start : start + GIL_KEEPING_PIECE])
    return hasher.hexdigest()
