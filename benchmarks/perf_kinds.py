"""Where the server's CPU goes per batched file, by content kind, from `perf` samples (issue 19).

    .venv/bin/python -m benchmarks.perf_kinds [--requests 5] [--kinds media,binary,text]

For each kind: a fresh server (fsync never), one warm-up batch, then `perf record` on the server
while `benchmarks.load batch --url` sends `--requests` POSTs of 1,000 distinct 4 KiB files. The
samples are grouped by shared object, and the kernel's scheduler and futex symbols apart: they are
threads handing the GIL to each other (and waiting for it). Prints us of CPU per file in each group:
the server's CPU over the load (from /proc, exact even when perf misses samples) split by the
groups' shares of the samples; never fails on speed. It waits out the inodes an earlier benchmark
freed (`floors.settle_after_deletes`) and should run alone (tests delete files). Even so, "kernel,
other" moves between runs of the same code (27-211 us per file here: ext4 without a journal looks
up each free inode's table block on creation, `find_inode_bit` -> `recently_deleted`): compare
kinds by the other groups. Needs `perf` (Debian's linux-perf) and perf_event_paranoid <= 2.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from benchmarks.floors import delete_tree, settle_after_deletes
from benchmarks.procs import rhinobox_server

FILES_PER_REQUEST: Final = 1000
# perf attaches to a running process after it starts: the load waits this long, or its first
# request is not sampled (one run measured a third of the CPU that way).
PERF_ATTACH_SECONDS: Final = 1.0
SAMPLE_HZ: Final = 1999
GROUPS: Final = ("python", "handoffs", "kernel, other", "libmagic", "re2", "compiled filter", "sqlite", "libc", "other")
# Kernel symbols of a thread going to sleep on, or waking another from, a futex (the GIL's condvar).
_HANDOFF_SYMBOLS: Final = re.compile(r"finish_task_switch|_raw_spin_unlock_irqrestore|futex|schedule|try_to_wake_up")
_LINE: Final = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[([.k])\]\s+(.+?)\s*$")


def group_of(dso: str, kernel: bool, symbol: str) -> str:
    """The group of one `perf report` row."""
    if kernel:
        return "handoffs" if _HANDOFF_SYMBOLS.search(symbol) else "kernel, other"
    needles = (
        ("libpython", "python"),
        ("libmagic", "libmagic"),
        ("_magic_native", "compiled filter"),
        ("libhs", "compiled filter"),  # Hyperscan, which only the compiled filter calls
        ("re2", "re2"),
        ("sqlite", "sqlite"),
    )
    for needle, group in needles:
        if needle in dso:
            return group
    return "libc" if dso.startswith("libc.") else "other"


def grouped_shares(report: str) -> dict[str, float]:
    """Percent of samples per group from `perf report --sort dso,sym --stdio -g none` output."""
    shares: dict[str, float] = defaultdict(float)
    for line in report.splitlines():
        if match := _LINE.match(line):
            percent, dso, kind, symbol = match.groups()
            shares[group_of(dso, kind == "k", symbol)] += float(percent)
    return shares


def sampled_cpu_seconds(report: str) -> float:
    """The CPU time the samples stand for: the cpu-clock event counts nanoseconds."""
    match = re.search(r"# Event count \(approx\.\): (\d+)", report)
    if match is None:
        raise RuntimeError("perf report printed no event count")
    return int(match.group(1)) / 1e9


def profile(kind: str, requests: int, scratch: Path) -> tuple[dict[str, float], float]:
    """Per-group percent of the server's samples, and its sampled CPU us per file, for one kind."""
    record = scratch / f"perf-{kind}.data"
    load = [sys.executable, "-m", "benchmarks.load", "batch", "--kind", kind]
    with rhinobox_server(scratch / f"data-{kind}", RHINOBOX_FSYNC="never") as server:
        subprocess.run([*load, "--url", server.url, "--batch-requests", "1"], check=True, capture_output=True)
        perf = subprocess.Popen(
            [
                "perf",
                "record",
                "-q",
                "-e",
                "cpu-clock",
                "-F",
                str(SAMPLE_HZ),
                "-g",
                "-p",
                str(server.pid),
                "-o",
                str(record),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(PERF_ATTACH_SECONDS)
            before = server.cpu_seconds()
            load_run = [*load, "--url", server.url, "--batch-requests", str(requests), "--seed", "7"]
            subprocess.run(load_run, check=True, capture_output=True)
            used = server.cpu_seconds() - before
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
    report = subprocess.run(
        ["perf", "report", "-i", str(record), "--no-children", "--sort", "dso,sym", "--stdio", "-g", "none"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if sampled_cpu_seconds(report) <= 0:
        raise RuntimeError(f"perf sampled nothing of the {kind} load")
    us_per_file = used * 1e6 / (requests * FILES_PER_REQUEST)
    return grouped_shares(report), us_per_file


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5, help="batch POSTs of 1,000 files per kind")
    parser.add_argument("--kinds", default="media,binary,text")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed (Debian: linux-perf)")
    print(f"# python -m benchmarks.perf_kinds --requests {args.requests}: server CPU us per batched file, by group")
    print("| kind | all | " + " | ".join(GROUPS) + " |")
    print("|---|" + "---:|" * (len(GROUPS) + 1))
    temp = Path(tempfile.gettempdir())
    settle_after_deletes(temp)
    scratch = Path(tempfile.mkdtemp(prefix="rhinobox-perf-", dir=temp))
    try:
        for kind in args.kinds.split(","):
            shares, us_per_file = profile(kind, args.requests, scratch)
            cells = " | ".join(f"{us_per_file * shares.get(group, 0.0) / 100:.0f}" for group in GROUPS)
            print(f"| {kind} | {us_per_file:.0f} | {cells} |", flush=True)
    finally:
        delete_tree(scratch)  # notes the time, so that the next run waits out the freed inodes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
