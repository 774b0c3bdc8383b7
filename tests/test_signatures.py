"""The signature fast path answers exactly what libmagic answers for the same bytes."""

from __future__ import annotations

import random

import magic
import pytest

from rhinobox.ingest.signatures import MIN_SIGNATURE_BYTES, SIGNATURES, match_signature
from rhinobox.ingest.sniff import MimeSniffer
from tests.samples import SAMPLES, make_sample


def header_for(checks: tuple[tuple[int, bytes], ...], rng: random.Random) -> bytes:
    size = max(offset + len(magic_bytes) for offset, magic_bytes in checks)
    head = bytearray(rng.randbytes(size))
    for offset, magic_bytes in checks:
        head[offset : offset + len(magic_bytes)] = magic_bytes
    return bytes(head)


@pytest.mark.parametrize(("checks", "mime"), SIGNATURES, ids=[mime + str(i) for i, (_, mime) in enumerate(SIGNATURES)])
def test_signature_agrees_with_libmagic(checks: tuple[tuple[int, bytes], ...], mime: str) -> None:
    rng = random.Random(mime)
    handle = magic.Magic(mime=True)
    for _ in range(60):
        data = header_for(checks, rng) + rng.randbytes(rng.randrange(MIN_SIGNATURE_BYTES, 2048))
        assert match_signature(data) == mime
        assert handle.from_buffer(data[:2048]) == mime


def test_short_or_unknown_content_goes_to_libmagic() -> None:
    assert match_signature(b"\xff\xd8\xff") is None
    assert match_signature(b"just some text, long enough to be considered at all") is None
    assert match_signature(random.Random(3).randbytes(4096)[:8] + b"\x00" * 64) is None


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_sniffer_answers_match_libmagic_for_every_sample(kind: str) -> None:
    handle = magic.Magic(mime=True)
    sniffer = MimeSniffer()
    for seed in range(20):
        _, data = make_sample(kind, seed)
        assert sniffer.sniff(data) == handle.from_buffer(data[:2048])
