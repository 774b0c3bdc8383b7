"""Types of real files agree with `file --mime-type` on the whole file (issue 19), in memory and streamed.

The corpus is built from this machine (benchmarks/sniff_corpus.py: files under /usr/share,
/usr/lib/python3, /usr/include and /etc, media made with ffmpeg, generated JSON/NDJSON/CSV larger
than an arena). scripts/test-packages.txt installs `file` and `ffmpeg`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.sniff_corpus import build_corpus, file_mime_types, sniff_like_server
from rhinobox.ingest.documents import DOCUMENT_HEAD_BYTES, DocumentScan
from rhinobox.ingest.sniff import SNIFF_BYTES, MimeSniffer

MIN_AGREEMENT = 0.99
# Disagreements we accept, with the reason (docs/dev/type-detection.md): none on this corpus today.
ACCEPTED: dict[str, str] = {}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    paths = build_corpus(tmp_path_factory.mktemp("corpus"))
    return list(zip(paths, file_mime_types(paths), strict=True))


def test_corpus_is_large_and_varied(corpus: list[tuple[Path, str]]) -> None:
    types = {mime for _, mime in corpus}
    assert len(corpus) >= 500
    assert len(types) >= 40
    whole_json = [path for path, mime in corpus if mime == "application/json" and path.stat().st_size > SNIFF_BYTES]
    assert len(whole_json) >= 10  # the files a head alone mislabels
    assert shutil.which("ffmpeg") is not None, "the test command installs ffmpeg (scripts/test-packages.txt)"
    assert sum(mime.startswith(("video/", "audio/")) for _, mime in corpus) >= 12


def test_types_agree_with_file_on_the_whole_file(corpus: list[tuple[Path, str]]) -> None:
    sniffer = MimeSniffer()
    disagreements = []
    for path, want in corpus:
        got = sniff_like_server(sniffer, path)
        if got != want and path.name not in ACCEPTED:
            disagreements.append(f"{path}: file says {want}, RhinoBox {got}")
    agreement = 1 - len(disagreements) / len(corpus)
    print(f"agreement {len(corpus) - len(disagreements)} / {len(corpus)}", *disagreements, sep="\n")
    assert agreement >= MIN_AGREEMENT, "\n".join(disagreements)


def test_streamed_and_in_memory_documents_get_the_same_type(corpus: list[tuple[Path, str]]) -> None:
    sniffer = MimeSniffer()
    for path, _ in corpus:
        if path.stat().st_size > DOCUMENT_HEAD_BYTES:
            continue  # a scan keeps only the head for the soft magic: a binary tail may differ
        data = path.read_bytes()
        scan = DocumentScan()
        for start in range(0, len(data), 1000):
            scan.feed(data[start : start + 1000])
        assert sniffer.sniff_scan(scan) == sniffer.sniff_document(data), path


def test_files_typed_without_libmagic_get_the_type_file_gives(corpus: list[tuple[Path, str]]) -> None:
    sniffer = MimeSniffer()
    cheap = []
    for path, want in corpus:
        data = path.read_bytes()
        got = sniffer.sniff_without_libmagic(data)
        if got is not None:
            cheap.append(path)
            assert got == want, path
    assert len(cheap) >= 100  # small plain text and media: the common case on the event loop
