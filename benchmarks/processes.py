"""Throughput and server CPU per file with 1, 2, ... serving processes (`RHINOBOX_PROCESSES`).

For each N: a fresh data dir, `rhinobox serve` with N processes, then
- single: `--single-requests` POSTs of one distinct 4 KiB file over `--connections` connections;
- batch: `--batch-requests` POSTs of `--batch-files` distinct 4 KiB files, `--batch-connections` at once;
and for each, files per second, request latency p50/p99, and the server's CPU seconds per file (the
supervisor and every serving process, user + system, from /proc). The client (this process) can be
pinned to some CPUs and the server to others (`--client-cpus`, `--server-cpus`, via sched_setaffinity
and taskset), so the client's cost is kept off the cores the server is measured on where there are
cores to spare. Prints figures; never fails on speed.

    .venv/bin/python -m benchmarks.processes --counts 1,2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from benchmarks.httpload import LoadResult, closed_loop
from benchmarks.procs import ServerProcess, rhinobox_server
from benchmarks.workload import multipart_body, small_files

FILE_SIZE: Final = 4096
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Figure:
    scenario: str
    processes: int
    files: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_s: float
    lock_wait_s: float
    stored: int
    failed: int

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_file(self) -> float:
        return 1000 * self.cpu_s / self.files if self.files else 0.0


def group_pids(pid: int) -> list[int]:
    """The server process and its serving processes (children), as /proc lists them now."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of `pids` so far (a process that exited meanwhile counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


async def lock_wait_seconds(url: str) -> float:
    """The server's `rhinobox_catalog_lock_wait_seconds_total` (all processes)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("rhinobox_catalog_lock_wait_seconds_total "):
            return float(line.split()[1])
    return 0.0


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def measure(
    scenario: str, server: ServerProcess, processes: int, bodies: list[bytes], files: int, connections: int
) -> Figure:
    pids = group_pids(server.pid)
    waited = await lock_wait_seconds(server.url)
    before = cpu_seconds(pids)
    result: LoadResult = await closed_loop(server.url + "/ingest", bodies, connections)
    cpu = cpu_seconds(pids) - before
    waited = await lock_wait_seconds(server.url) - waited
    if result.errors:
        print(f"  {scenario}: {len(result.errors)} error(s), first: {result.errors[0]}")
    return Figure(
        scenario,
        processes,
        files,
        result.seconds,
        1000 * _percentile(result.latencies, 0.5),
        1000 * _percentile(result.latencies, 0.99),
        cpu,
        waited,
        result.stored,
        result.failed,
    )


async def run_count(args: argparse.Namespace, processes: int, workdir: Path, seed: int) -> list[Figure]:
    rng = random.Random(seed)
    singles = [multipart_body([f]) for f in small_files(rng, args.single_requests, FILE_SIZE)]
    batches = [multipart_body(small_files(rng, args.batch_files, FILE_SIZE)) for _ in range(args.batch_requests)]
    data_dir = workdir / f"n{processes}-{seed}"
    env = {"RHINOBOX_PROCESSES": str(processes), "RHINOBOX_FSYNC": args.fsync}
    server = rhinobox_server(data_dir, **env)
    if args.server_cpus:
        server.argv = ["taskset", "-c", args.server_cpus, *server.argv]
    figures = []
    with server:
        warm = [multipart_body([f]) for f in small_files(rng, 200, FILE_SIZE)]
        await closed_loop(server.url + "/ingest", warm, args.connections)
        figures.append(await measure("single", server, processes, singles, len(singles), args.connections))
        files = args.batch_files * args.batch_requests
        figures.append(await measure("batch", server, processes, batches, files, args.batch_connections))
    shutil.rmtree(data_dir, ignore_errors=True)
    return figures


def render(figures: Sequence[Figure]) -> str:
    lines = [
        "| scenario | processes | files/s | p50 ms | p99 ms | server CPU ms/file | write-lock wait ms/file |"
        " stored | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(
            f"| {f.scenario} | {f.processes} | {f.files_per_s:.0f} | {f.p50_ms:.1f} | {f.p99_ms:.1f} |"
            f" {f.cpu_ms_per_file:.2f} | {1000 * f.lock_wait_s / max(f.files, 1):.3f} | {f.stored} | {f.failed} |"
        )
    return "\n".join(lines)


def medians(figures: Sequence[Figure]) -> list[Figure]:
    """Per (scenario, processes): the run with the median throughput."""
    keyed: dict[tuple[str, int], list[Figure]] = {}
    for figure in figures:
        keyed.setdefault((figure.scenario, figure.processes), []).append(figure)
    chosen = []
    for runs in keyed.values():
        middle = statistics.median_low([f.files_per_s for f in runs])
        chosen.append(next(f for f in runs if f.files_per_s == middle))
    return sorted(chosen, key=lambda f: (f.scenario != "single", f.scenario, f.processes))


async def main_async(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.counts.split(",")]
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    workdir = Path(tempfile.mkdtemp(prefix="rhinobox-processes-", dir=args.workdir))
    figures: list[Figure] = []
    try:
        for repeat in range(args.repeat):
            for processes in counts:  # alternating, so a change in the machine's load hits every N alike
                run = await run_count(args, processes, workdir, args.seed + repeat)
                figures += run
                print(render(run).splitlines()[-2])
                print(render(run).splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmedian of {args.repeat} run(s) per row; cores usable here: {len(os.sched_getaffinity(0))}")
    print(render(medians(figures)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="1,2", help="serving process counts to measure, comma-separated")
    p.add_argument("--repeat", type=int, default=1, help="runs per count (alternating); the median is reported")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fsync", default="always")
    p.add_argument("--connections", type=int, default=32, help="single: concurrent connections")
    p.add_argument("--single-requests", type=int, default=2000)
    p.add_argument("--batch-files", type=int, default=1000)
    p.add_argument("--batch-requests", type=int, default=6)
    p.add_argument("--batch-connections", type=int, default=2, help="batch: requests in flight at once")
    p.add_argument("--client-cpus", default="", help="pin this client to these CPUs (e.g. 1)")
    p.add_argument("--server-cpus", default="", help="pin the server to these CPUs with taskset (e.g. 0-15)")
    p.add_argument("--workdir", default=None, help="where temp data dirs go (default: $TMPDIR)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
