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


def _first_in_table(head: bytes) -> str | None:
    """The table read in order, as the lookup by first byte must answer."""
    for checks, mime in SIGNATURES:
        if all(head[offset : offset + len(expected)] == expected for offset, expected in checks):
            return mime
    return None


def test_the_lookup_by_first_byte_answers_as_the_table_in_order() -> None:
    """Headers holding one, two (overlaid at different offsets) or no signatures, in noise."""
    rng = random.Random(44)
    heads = []
    for _ in range(3000):
        head = bytearray(rng.randbytes(64))
        for checks, _mime in rng.sample(SIGNATURES, rng.choice((0, 1, 2))):
            for offset, expected in checks:
                head[offset : offset + len(expected)] = expected
        heads.append(bytes(head))
    overlaid = bytearray(rng.randbytes(64))
    overlaid[0:4], overlaid[4:12] = b"II*\x00", b"ftypisom"  # TIFF at 0 and MP4 at 4: the table says MP4
    heads.append(bytes(overlaid))
    assert match_signature(bytes(overlaid)) == "video/mp4"
    assert sum(_first_in_table(h) is not None for h in heads) > 1500
    assert [match_signature(h) for h in heads] == [_first_in_table(h) for h in heads]
