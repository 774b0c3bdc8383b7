"""Thread CPU of typing one 4 KiB file, with and without the soft-magic prefilter (issue 19).

    .venv/bin/python -m benchmarks.sniff_cpu [--files 5000]

The files are the load benchmark's (`benchmarks/load.py --kind`): the same seeded bytes. Each kind
is typed by a fresh sniffer in this thread, so handle building is counted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from benchmarks.workload import Kind, rng_for, small_files
from rhinobox.ingest.sniff import MimeSniffer

KINDS: tuple[Kind, ...] = ("media", "binary", "text")


def microseconds_per_file(files: list[bytes], prefilter: bool) -> float:
    sniffer = MimeSniffer(prefilter)
    sniffer.warm_up()
    start = time.thread_time()
    for data in files:
        sniffer.sniff_document(memoryview(data))
    return (time.thread_time() - start) / len(files) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    args = parser.parse_args(argv)
    print("| kind | prefilter on, us/file | off, us/file | off / on |")
    print("|---|---:|---:|---:|")
    for kind in KINDS:
        files = small_files(rng_for(0, "batch"), args.files, 4096, kind)
        on, off = microseconds_per_file(files, True), microseconds_per_file(files, False)
        print(f"| {kind} | {on:.1f} | {off:.1f} | {off / on:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
