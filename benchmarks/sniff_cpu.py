"""Thread CPU of typing one 4 KiB file: the prefilter with the compiled or the Python gates, and none (issue 19).

    .venv/bin/python -m benchmarks.sniff_cpu [--files 5000] [--floors]

The files are the load benchmark's (`benchmarks/load.py --kind`): the same seeded bytes. Each kind
is typed by a fresh sniffer in this thread, so handle building is counted. `--floors` adds what
no prefilter can remove: libmagic with a database of no test (its built-in checks alone), and of
the tests the prefilter cannot reduce (always candidates).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from benchmarks.workload import Kind, rng_for, small_files
from rhinobox.ingest.magic_cookies import LibmagicHandle, load_prefilter
from rhinobox.ingest.sniff import MimeSniffer

KINDS: tuple[Kind, ...] = ("media", "binary", "text")
MIME_TYPE_FLAG = 0x10  # magic.h MAGIC_MIME_TYPE


def microseconds_per_file(files: list[bytes], prefilter: bool, native: bool = True) -> float:
    sniffer = MimeSniffer(prefilter, native)
    sniffer.warm_up()
    start = time.thread_time()
    for data in files:
        sniffer.sniff_document(memoryview(data))
    return (time.thread_time() - start) / len(files) * 1e6


def libmagic_floors(files: list[bytes]) -> tuple[float, float]:
    """Thread CPU per file of libmagic (as `file` runs it) on no test, and on the irreducible tests."""
    loaded = load_prefilter()
    if loaded is None:
        raise SystemExit("the prefilter is off (see the warning): no floors to measure")
    database, prefilter = loaded
    figures = []
    for tests in ([], sorted(prefilter.always)):
        handle = LibmagicHandle(MIME_TYPE_FLAG, database.reduced(tests))
        start = time.thread_time()
        for data in files:
            handle.answer(data)
        figures.append((time.thread_time() - start) / len(files) * 1e6)
        handle.close()
    return figures[0], figures[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--floors", action="store_true", help="also libmagic on no test and on the irreducible ones")
    args = parser.parse_args(argv)
    floors = " libmagic, no test | libmagic, irreducible tests |" if args.floors else ""
    print(f"| kind | prefilter, compiled, us/file | prefilter, Python | no prefilter | none / compiled |{floors}")
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if args.floors else ""))
    for kind in KINDS:
        files = small_files(rng_for(0, "batch"), args.files, 4096, kind)
        compiled, python = microseconds_per_file(files, True), microseconds_per_file(files, True, native=False)
        off = microseconds_per_file(files, False)
        cells = " {:.1f} | {:.1f} |".format(*libmagic_floors(files)) if args.floors else ""
        print(f"| {kind} | {compiled:.1f} | {python:.1f} | {off:.1f} | {off / compiled:.1f}x |{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
