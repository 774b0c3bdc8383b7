"""Server CPU per file, thread by thread, by content kind and worker count (issue 19's attribution).

    .venv/bin/python -m benchmarks.threads [--workers 1,4] [--requests 10]

For each worker count and kind: a fresh server (fsync never), `benchmarks.load batch --url` against
it (`--requests` POSTs of 1,000 distinct 4 KiB files), and each thread's CPU (user + system, from
/proc) and voluntary context switches per file. The event loop's thread is "loop", the worker
threads together "workers", the rest "other". Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.procs import rhinobox_server

KINDS: Final = ("media", "binary", "text")
FILES_PER_REQUEST: Final = 1000
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ThreadUse:
    cpu_s: float
    switches: int  # voluntary context switches (waits: the GIL, a lock, a syscall that blocked)


def thread_use(pid: int) -> dict[int, ThreadUse]:
    """Every thread of `pid` now, by thread id."""
    use: dict[int, ThreadUse] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue  # ended meanwhile
        switches = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt"))
        use[int(task.name)] = ThreadUse((int(fields[11]) + int(fields[12])) / _CLK_TCK, switches)
    return use


def measure(kind: str, workers: int, requests: int) -> dict[str, tuple[float, float]]:
    """us of CPU and context switches per file for the loop, the workers and the other threads."""
    settings = {"RHINOBOX_FSYNC": "never", "RHINOBOX_WORKERS": str(workers)}
    with tempfile.TemporaryDirectory() as scratch, rhinobox_server(Path(scratch) / "data", **settings) as server:
        before = thread_use(server.pid)
        load = [sys.executable, "-m", "benchmarks.load", "batch", "--url", server.url, "--kind", kind]
        subprocess.run([*load, "--batch-requests", str(requests)], check=True, capture_output=True)
        after = thread_use(server.pid)
    files = requests * FILES_PER_REQUEST
    # Worker threads start with the pool; the busiest `workers` threads other than the loop are they.
    unseen = ThreadUse(0.0, 0)
    grown = {
        tid: (use.cpu_s - before.get(tid, unseen).cpu_s, use.switches - before.get(tid, unseen).switches)
        for tid, use in after.items()
    }
    loop = grown.pop(server.pid)
    busiest = sorted(grown, key=lambda tid: grown[tid][0], reverse=True)
    groups = {
        "loop": [loop],
        "workers": [grown[tid] for tid in busiest[:workers]],
        "other": [grown[tid] for tid in busiest[workers:]],
    }
    return {
        name: (1e6 * sum(cpu for cpu, _ in uses) / files, sum(switches for _, switches in uses) / files)
        for name, uses in groups.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,4", help="worker counts (RHINOBOX_WORKERS), comma-separated")
    parser.add_argument("--requests", type=int, default=10, help="batch POSTs of 1,000 files per measure")
    args = parser.parse_args(argv)
    print("| workers | kind | loop us/file | workers us/file | other us/file | all us/file | worker switches/file |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for workers in (int(count) for count in args.workers.split(",")):
        for kind in KINDS:
            figures = measure(kind, workers, args.requests)
            total = sum(cpu for cpu, _ in figures.values())
            cells = " | ".join(f"{figures[name][0]:.0f}" for name in ("loop", "workers", "other"))
            print(f"| {workers} | {kind} | {cells} | {total:.0f} | {figures['workers'][1]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
