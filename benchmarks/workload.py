"""Reproducible upload workloads: seeded file contents and the multipart bodies that carry them.

Every figure in docs/performance.md and docs/dev/performance-log.md comes from bytes this module
generates from a seed, so a run can be repeated exactly; files are distinct unless a scenario says
otherwise.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "BLOCK",
    "BOUNDARY",
    "CONTENT_TYPE",
    "Kind",
    "Streamed",
    "mixed_sizes",
    "multipart_body",
    "ring_blocks",
    "rng_for",
    "small_files",
    "streamed_body",
    "streamed_body_length",
]

# Fixed so bodies are byte-identical between runs and between the floor servers and RhinoBox.
BOUNDARY: Final = "rhinobox-bench-7d3f0a9c"
CONTENT_TYPE: Final = f"multipart/form-data; boundary={BOUNDARY}"
BLOCK: Final = 1024 * 1024  # streamed files are generated and sent in blocks this big
_TAIL: Final = f"\r\n--{BOUNDARY}--\r\n".encode()

Kind = Literal["binary", "text", "media"]

# Maps every byte value to a printable character, so random bytes become "text" for libmagic.
_TEXT_ALPHABET: Final = b"abcdefghijklmnopqrstuvwxyz      ABCDEFGHIJ.,\n"
_TEXT_TABLE: Final = bytes(_TEXT_ALPHABET[i % len(_TEXT_ALPHABET)] for i in range(256))


# File signatures libmagic recognises early; "media" files are random bytes behind one of them.
MEDIA_HEADERS: Final = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x02\x00\x00\x00",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
    b"%PDF-1.4\n",
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
)


def rng_for(seed: int, scenario: str) -> random.Random:
    """A generator private to one scenario, so scenarios never produce each other's files."""
    return random.Random(f"{seed}/{scenario}")


def small_files(rng: random.Random, count: int, size: int, kind: Kind = "binary") -> list[bytes]:
    """`count` distinct files of `size` random bytes (or random printable text)."""
    raw = rng.randbytes(count * size)
    if kind == "text":
        raw = raw.translate(_TEXT_TABLE)
    files = [raw[i * size : (i + 1) * size] for i in range(count)]
    if kind == "media":
        files = [(h := MEDIA_HEADERS[i % len(MEDIA_HEADERS)]) + f[len(h) :] for i, f in enumerate(files)]
    return files


def mixed_sizes(rng: random.Random, count: int, smallest: int, largest: int, total_cap: int) -> list[int]:
    """Log-uniform sizes between `smallest` and `largest` (media-like), stopping at `total_cap` bytes."""
    sizes: list[int] = []
    low, high = math.log(smallest), math.log(largest)
    for _ in range(count):
        size = int(math.exp(rng.uniform(low, high)))
        if sizes and sum(sizes) + size > total_cap:
            break
        sizes.append(size)
    return sizes


def part_head(index: int, name: str, content_type: str = "application/octet-stream") -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()


def multipart_body(files: Sequence[bytes], names: Sequence[str] | None = None) -> bytes:
    """A whole multipart/form-data body with one `files` part per file (built before timing starts)."""
    pieces: list[bytes] = []
    for index, data in enumerate(files):
        name = names[index] if names is not None else f"f{index:06d}.bin"
        pieces += [b"\r\n" if index else b"", part_head(index, name), data]
    pieces.append(_TAIL)
    return b"".join(pieces)


@dataclass(frozen=True, slots=True)
class Streamed:
    """A large file described by its seed and size; generated block by block, never held whole."""

    seed: int
    size: int
    name: str = "large.bin"

    def blocks(self) -> Iterator[bytes]:
        """The file's bytes in `BLOCK`-sized pieces; distinct per block (a counter leads each)."""
        base = random.Random(self.seed).randbytes(BLOCK)
        for number, offset in enumerate(range(0, self.size, BLOCK)):
            length = min(BLOCK, self.size - offset)
            yield (number.to_bytes(8, "little") + base[8:length]) if length > 8 else base[:length]


def streamed_body_length(file: Streamed) -> int:
    return len(part_head(0, file.name)) + file.size + len(_TAIL)


async def streamed_body(file: Streamed) -> AsyncIterator[bytes]:
    """The multipart body for one streamed file, for aiohttp's client (send with Content-Length)."""
    yield part_head(0, file.name)
    for block in file.blocks():
        yield block
    yield _TAIL


def ring_blocks(count: int = 16) -> list[bytes]:
    """A few pre-generated blocks that the disk and hash floors cycle through, so generating bytes
    is not counted in a floor's time (neither filesystem nor BLAKE3 cares what the bytes are)."""
    rng = random.Random("ring")
    return [rng.randbytes(BLOCK) for _ in range(count)]
