"""Client-supplied names and hints: property tests that they are always safe to store and show."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from rhinobox.ingest.names import MAX_NAME_CHARS, clean_filename, clean_hint, extension_of


@given(st.binary(max_size=2000))
def test_any_bytes_give_a_printable_bounded_name(raw: bytes) -> None:
    name = clean_filename(raw)
    assert 0 < len(name) <= MAX_NAME_CHARS
    assert name.encode("utf-8")
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name)


@given(st.text(max_size=2000))
def test_any_text_gives_a_printable_bounded_name(raw: str) -> None:
    name = clean_filename(raw)
    assert 0 < len(name) <= MAX_NAME_CHARS
    assert not any(unicodedata.category(ch) == "Cc" for ch in name)


def test_truncation_keeps_the_extension() -> None:
    name = clean_filename("a" * 1000 + ".jpeg")
    assert len(name) == MAX_NAME_CHARS
    assert name.endswith(".jpeg")


@given(st.text(max_size=300))
def test_hints_are_safe_relative_segments(raw: str) -> None:
    hint = clean_hint(raw)
    if hint is None:
        return
    segments = hint.split("/")
    assert 1 <= len(segments) <= 4
    for segment in segments:
        assert segment not in ("", ".", "..")
        assert set(segment) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-")


def test_extensions() -> None:
    assert extension_of("photo.JPG") == ".jpg"
    assert extension_of("archive.tar.gz") == ".gz"
    assert extension_of("dir.d/noext") == ""
    assert extension_of(".bashrc") == ""
    assert extension_of("a\\b\\c.PY") == ".py"
