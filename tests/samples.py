"""Small real files of common media types, made in code (no fixtures on disk), each distinct by seed."""

from __future__ import annotations

import gzip
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable

__all__ = ["SAMPLES", "make_sample"]


def png(seed: int) -> bytes:
    rng = random.Random(seed)
    width, height = 4, 4
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(width * 3)) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def gif(seed: int) -> bytes:
    comment = str(seed).encode()
    header = b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00" + bytes([seed % 256, 0, 0, 0, 0, 0])
    return header + b"\x21\xfe" + bytes([len(comment)]) + comment + b"\x00;"


def jpeg(seed: int) -> bytes:
    body = random.Random(seed).randbytes(512)
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + body + b"\xff\xd9"


def pdf(seed: int) -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% seed " + str(seed).encode() + b"\ntrailer\n%%EOF\n"


def zip_archive(seed: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("note.txt", f"seed {seed}")
    return buffer.getvalue()


def gzip_archive(seed: int) -> bytes:
    return gzip.compress(f"seed {seed}".encode() * 10, mtime=0)


def mp4(seed: int) -> bytes:
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isomiso2"
    free = struct.pack(">I", 16) + b"free" + struct.pack(">Q", seed)
    return ftyp + free


def mp3(seed: int) -> bytes:
    frame = b"\xff\xfb\x90\x64" + bytes(405) + seed.to_bytes(8, "big")
    return b"ID3\x03\x00\x00\x00\x00\x00\x00" + frame * 3


def wav(seed: int) -> bytes:
    data = random.Random(seed).randbytes(64)
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + (struct.pack("<I", len(data)) + data)
    )


def python_source(seed: int) -> bytes:
    return f"import os\n\n\ndef seed():\n    return {seed}\n".encode()


def plain_text(seed: int) -> bytes:
    return f"just some words, number {seed}\n".encode()


def binary(seed: int) -> bytes:
    return b"\x00\x01RHINO-BINARY\x00" + random.Random(seed).randbytes(4096)


# name -> (maker, file extension, expected MIME, expected category)
SAMPLES: dict[str, tuple[Callable[[int], bytes], str, str, str]] = {
    "png": (png, ".png", "image/png", "images/png"),
    "gif": (gif, ".gif", "image/gif", "images/gif"),
    "jpeg": (jpeg, ".jpg", "image/jpeg", "images/jpeg"),
    "pdf": (pdf, ".pdf", "application/pdf", "documents/pdf"),
    "zip": (zip_archive, ".zip", "application/zip", "archives/zip"),
    "gzip": (gzip_archive, ".gz", "application/gzip", "archives/gzip"),
    "mp4": (mp4, ".mp4", "video/mp4", "videos/mp4"),
    "mp3": (mp3, ".mp3", "audio/mpeg", "audio/mpeg"),
    "wav": (wav, ".wav", "audio/x-wav", "audio/x-wav"),
    "python": (python_source, ".py", "text/x-script.python", "code/python"),
    "text": (plain_text, ".txt", "text/plain", "documents/text"),
    "binary": (binary, ".bin", "application/octet-stream", "other/octet-stream"),
}


def make_sample(kind: str, seed: int) -> tuple[str, bytes]:
    """(filename, bytes) of a sample of `kind`, distinct for each seed."""
    maker, extension, _, _ = SAMPLES[kind]
    return f"{kind}-{seed}{extension}", maker(seed)
