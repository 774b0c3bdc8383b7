"""A corpus of real files from this Debian machine, and RhinoBox's types for it beside `file --mime-type`.

    .venv/bin/python -m benchmarks.sniff_corpus            # agreement, and every disagreement
    .venv/bin/python -m benchmarks.sniff_corpus --timing   # also the sniff CPU per file, by type

The files: up to PER_EXTENSION files of each extension found under CORPUS_ROOTS (more of JSON,
CSV, SVG, HTML and XML) (chosen by a hash
of the path, so the pick is stable and spread over directories), media made with ffmpeg when it is
installed, and generated JSON, NDJSON and CSV documents larger than an upload arena. Each is typed
the way the server types it: whole in memory up to SMALL_FILE_MAX, streamed through a
`DocumentScan` above.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rhinobox.ingest.documents import DocumentScan
from rhinobox.ingest.receive import SMALL_FILE_MAX
from rhinobox.ingest.sniff import MimeSniffer

__all__ = ["CORPUS_ROOTS", "CorpusFile", "build_corpus", "file_mime_types", "sniff_like_server"]

CORPUS_ROOTS: Final = ("/usr/share", "/usr/lib/python3", "/usr/include", "/etc")
PER_EXTENSION: Final = 4
# Types whose evidence is the whole document get more files: they are what a head gets wrong.
DOCUMENT_EXTENSIONS: Final = frozenset({".json", ".ndjson", ".jsonl", ".geojson", ".csv", ".svg", ".html", ".xml"})
PER_DOCUMENT_EXTENSION: Final = 24
MAX_FILE_BYTES: Final = 8 * 1024 * 1024  # past libmagic's 7 MiB `file` reads only part of a file

STREAM_PIECE: Final = 1024 * 1024
# (name, ffmpeg arguments): a second of test picture or tone in each common container.
FFMPEG_MEDIA: Final = (
    ("clip.mp4", "-f lavfi -i testsrc=size=64x48:rate=5 -t 1 -pix_fmt yuv420p"),
    ("clip.webm", "-f lavfi -i testsrc=size=64x48:rate=5 -t 1 -c:v libvpx"),
    ("clip.mkv", "-f lavfi -i testsrc=size=64x48:rate=5 -t 1"),
    ("clip.avi", "-f lavfi -i testsrc=size=64x48:rate=5 -t 1"),
    ("clip.mov", "-f lavfi -i testsrc=size=64x48:rate=5 -t 1"),
    ("clip.ogv", "-f lavfi -i testsrc=size=64x48:rate=5 -t 1"),
    ("clip.gif", "-f lavfi -i testsrc=size=64x48:rate=5 -t 1"),
    ("frame.png", "-f lavfi -i testsrc=size=64x48 -frames:v 1"),
    ("frame.jpg", "-f lavfi -i testsrc=size=64x48 -frames:v 1"),
    ("frame.bmp", "-f lavfi -i testsrc=size=64x48 -frames:v 1"),
    ("frame.tiff", "-f lavfi -i testsrc=size=64x48 -frames:v 1"),
    ("frame.webp", "-f lavfi -i testsrc=size=64x48 -frames:v 1"),
    ("tone.wav", "-f lavfi -i sine=frequency=440:duration=1"),
    ("tone.mp3", "-f lavfi -i sine=frequency=440:duration=1"),
    ("tone.ogg", "-f lavfi -i sine=frequency=440:duration=1 -c:a libvorbis"),
    ("tone.opus", "-f lavfi -i sine=frequency=440:duration=1"),
    ("tone.flac", "-f lavfi -i sine=frequency=440:duration=1"),
    ("tone.m4a", "-f lavfi -i sine=frequency=440:duration=1"),
    ("tone.aiff", "-f lavfi -i sine=frequency=440:duration=1"),
    ("tone.au", "-f lavfi -i sine=frequency=440:duration=1"),
)


@dataclass(frozen=True, slots=True)
class CorpusFile:
    path: Path
    size: int


def _candidates(roots: Sequence[str]) -> Iterator[Path]:
    for root in roots:
        for directory, subdirs, names in os.walk(root):
            subdirs.sort()
            for name in sorted(names):
                path = Path(directory, name)
                if path.is_symlink() or not path.is_file():
                    continue
                yield path


def _stable_key(path: Path) -> bytes:
    return hashlib.blake2b(str(path).encode(), digest_size=8).digest()


def pick_system_files(roots: Sequence[str] = CORPUS_ROOTS, per_extension: int = PER_EXTENSION) -> list[Path]:
    """Up to `per_extension` readable files of each extension (by a hash of the path: stable, spread)."""
    by_extension: dict[str, list[Path]] = defaultdict(list)
    for path in _candidates(roots):
        by_extension[path.suffix.lower()].append(path)
    picked: list[Path] = []
    for extension in sorted(by_extension):
        wanted = PER_DOCUMENT_EXTENSION if extension in DOCUMENT_EXTENSIONS else per_extension
        chosen = 0
        for path in sorted(by_extension[extension], key=_stable_key):
            try:
                size = path.stat().st_size
                readable = os.access(path, os.R_OK)
            except OSError:
                continue
            if readable and 2 <= size <= MAX_FILE_BYTES:
                picked.append(path)
                chosen += 1
            if chosen == wanted:
                break
    return picked


def make_media(directory: Path) -> list[Path]:
    """Media files made with ffmpeg (none when ffmpeg is not installed)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return []
    made: list[Path] = []
    for name, arguments in FFMPEG_MEDIA:
        target = directory / name
        command = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", *arguments.split(), "-fflags", "+bitexact"]
        result = subprocess.run([*command, str(target)], capture_output=True, check=False, timeout=60)
        if result.returncode == 0 and target.stat().st_size > 0:
            made.append(target)
    return made


def make_documents(directory: Path, seed: int = 19) -> list[Path]:
    """JSON, NDJSON and CSV documents above and below an arena's size, and a few that are not JSON."""
    rng = random.Random(seed)
    records = [
        {"id": i, "name": f"item {i}", "tags": ["a", "b"][: i % 3], "price": round(rng.uniform(0, 99), 2)}
        for i in range(6000)
    ]
    documents = {
        "large.json": json.dumps(records, indent=2),
        "medium.json": json.dumps(records[:60]),
        "records.ndjson": "\n".join(json.dumps(r) for r in records) + "\n",
        "broken.json": json.dumps(records)[:-1],
        "table.csv": "id,name,price\n" + "".join(f"{r['id']},{r['name']},{r['price']}\n" for r in records),
        "small.csv": "a,b,c\n1,2,3\n4,5,6\n7,8,9\n",
    }
    paths: list[Path] = []
    for name, text in documents.items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def build_corpus(directory: Path) -> list[Path]:
    """The whole corpus: system files, then ffmpeg media and generated documents written to `directory`."""
    return pick_system_files() + make_media(directory) + make_documents(directory)


def file_mime_types(paths: Sequence[Path]) -> list[str]:
    """`file --mime-type` on each whole file (one `file` process for all)."""
    with tempfile.NamedTemporaryFile("w", suffix=".list") as names:
        names.write("".join(f"{path}\n" for path in paths))
        names.flush()
        out = subprocess.run(
            ["file", "--brief", "--mime-type", "--files-from", names.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    answers = out.splitlines()
    if len(answers) != len(paths):
        raise RuntimeError(f"`file` answered {len(answers)} lines for {len(paths)} files")
    return [answer.strip().lower() for answer in answers]


def sniff_like_server(sniffer: MimeSniffer, path: Path) -> str:
    """The type the server gives this file's bytes: whole in memory when small, else streamed."""
    if path.stat().st_size <= SMALL_FILE_MAX:
        return sniffer.sniff_document(path.read_bytes())
    scan = DocumentScan()
    with path.open("rb") as stream:
        while piece := stream.read(STREAM_PIECE):
            scan.feed(piece)
    return sniffer.sniff_scan(scan)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timing", action="store_true", help="also time the sniff per file, by `file`'s type")
    args = parser.parse_args(argv)
    sniffer = MimeSniffer()
    with tempfile.TemporaryDirectory() as temp:
        paths = build_corpus(Path(temp))
        expected = file_mime_types(paths)
        cpu: dict[str, list[float]] = defaultdict(list)
        disagree: list[tuple[Path, str, str]] = []
        for path, want in zip(paths, expected, strict=True):
            started = time.thread_time()
            got = sniff_like_server(sniffer, path)
            cpu[want].append(time.thread_time() - started)
            if got != want:
                disagree.append((path, want, got))
    agree = len(paths) - len(disagree)
    print(f"agreement with `file --mime-type`: {agree} / {len(paths)} ({100 * agree / len(paths):.1f}%)")
    for path, want, got in disagree:
        print(f"  {path}: file {want}, RhinoBox {got}")
    kinds = Counter(expected)
    print(f"{len(kinds)} types; most common: {', '.join(f'{k} {n}' for k, n in kinds.most_common(8))}")
    if args.timing:
        for mime, times in sorted(cpu.items(), key=lambda item: -len(item[1])):
            print(f"  {mime:45s} n={len(times):4d}  mean sniff CPU {1e3 * sum(times) / len(times):7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
