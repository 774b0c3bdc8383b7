"""Throughput and server CPU per file with 1, 2, ... serving processes (`RHINOBOX_PROCESSES`).

For each N: a fresh data dir, `rhinobox serve` with N processes, then
- single: `--single-requests` POSTs of one distinct 4 KiB file over `--connections` connections;
- batch: `--batch-requests` POSTs of `--batch-files` distinct 4 KiB files, `--batch-connections` at once;
- large: `--large-count` uploads of `--large-mib` MiB at once, streamed (never held whole; 0: skipped);
and for each, files per second, request latency p50/p99, the server's CPU seconds per file (the
supervisor and every serving process, user + system, from /proc), the client's CPU per file, and the
blobs the server's /stats gained (marked where not one per file sent: a client that sent duplicates).
Single and batch load comes from Debian's wrk with benchmarks/wrk/distinct_multipart.lua where it is
installed (`--loader wrk`, benchmarks/wrkload.py), else from aiohttp (`--loader aiohttp`); the large
scenario always streams with aiohttp. The client can be pinned to some CPUs and the server to others
(`--client-cpus`, `--server-cpus`; wrk and the server via taskset, this process via sched_setaffinity),
so the client's cost is kept off the cores the server is measured on where there are cores to spare;
unpinned, the server gets every CPU this process could use at start. With a group's shared sync record
(rhinobox.blobs.shared_sync), also the syncfs calls per 1,000 files and the share of sync turns another
process's sync covered. `--fsync` takes several modes and `--trees` several checkouts (a `git worktree`
of the baseline, say), all measured alternately in one run. Prints figures; never fails on speed.

    .venv/bin/python -m benchmarks.processes --counts 1,2
    .venv/bin/python -m benchmarks.processes --loader wrk --client-cpus 1 --fsync never --large-count 0
    .venv/bin/python -m benchmarks.processes --fsync always,never --trees before=/tmp/base,after=.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import aiohttp

from benchmarks.httpload import Body, LoadResult, closed_loop
from benchmarks.procs import REPO_ROOT, ServerProcess, rhinobox_server
from benchmarks.workload import Streamed, multipart_body, small_files
from benchmarks.wrkload import WrkResult, require_wrk, run_wrk, wrk_available
from rhinobox.blobs.shared_sync import GROUP_DIRNAME, SYNC_RECORD_FILENAME, SyncCounts, read_sync_counts

FILE_SIZE: Final = 4096
MIB: Final = 1024 * 1024
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
LOADERS: Final = ("aiohttp", "wrk")


@dataclass(frozen=True, slots=True)
class Load:
    """What one scenario's client did, whichever loader drove it."""

    files: int  # files in the requests answered
    seconds: float
    p50_ms: float
    p99_ms: float
    stored: int  # per the answers
    failed: int
    client_cpu_s: float
    problems: list[str]  # non-200 answers, socket errors, duplicates: printed, never fatal


@dataclass(frozen=True, slots=True)
class Figure:
    loader: str
    tree: str
    fsync: str
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
    syncs: SyncCounts | None  # during this scenario, where the server keeps a group sync record
    nbytes: int  # the files' bytes
    client_cpu_s: float
    blobs_added: int  # per the server's /stats: each distinct file sent adds one

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / MIB / self.seconds if self.seconds else 0.0

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


async def stored_blobs(url: str) -> int:
    """Blobs the server holds (its /stats, read from the shared catalog by whichever process answers)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/stats") as response:
        blobs: int = (await response.json())["blobs"]
    return blobs


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def sync_counts(data_dir: Path) -> SyncCounts | None:
    """The group's syncfs calls and covered turns so far, if its server keeps the record."""
    group = data_dir / GROUP_DIRNAME
    return read_sync_counts(group) if (group / SYNC_RECORD_FILENAME).exists() else None


@dataclass(frozen=True, slots=True)
class Run:
    """One server under measure: which checkout it runs, its fsync mode and process count."""

    loader: str
    tree: str
    fsync: str
    processes: int
    server: ServerProcess
    data_dir: Path


async def aiohttp_load(url: str, bodies: Sequence[Body], files: int, connections: int) -> Load:
    """Prebuilt bodies over aiohttp (closed loop); the client CPU is this process's."""
    cpu = time.process_time()
    result: LoadResult = await closed_loop(url, bodies, connections)
    cpu = time.process_time() - cpu
    p50, p99 = (1000 * _percentile(result.latencies, q) for q in (0.5, 0.99))
    return Load(files, result.seconds, p50, p99, result.stored, result.failed, cpu, result.errors)


async def wrk_load(url: str, args: argparse.Namespace, files_per_request: int, requests: int, connections: int) -> Load:
    """`requests` POSTs of distinct files from wrk (pinned to `--client-cpus`), run off the event loop."""
    threads = math.gcd(args.wrk_threads, connections, requests)
    result: WrkResult = await asyncio.to_thread(
        run_wrk,
        url,
        files_per_request=files_per_request,
        connections=connections,
        threads=threads,
        requests=requests,
        cpus=args.client_cpus,
    )
    problems = [
        f"{label}: {count}"
        for label, count in (
            ("answered requests short of those asked", requests - result.requests),
            ("answers other than 200", result.non_200),
            ("socket errors or timeouts", result.socket_errors),
            ("files answered as duplicates", result.duplicates),
            ("answers without counts", result.unparsed),
        )
        if count
    ]
    return Load(
        result.files,
        result.seconds,
        result.p50_ms,
        result.p99_ms,
        result.stored,
        result.failed,
        result.client_cpu_s,
        problems,
    )


async def measure(run: Run, scenario: str, load: Awaitable[Load], nbytes_per_file: int) -> Figure:
    """Drive `load` (not started yet) against `run`'s server, with the server's CPU, lock, sync and blobs around it."""
    server = run.server
    pids = group_pids(server.pid)
    waited = await lock_wait_seconds(server.url)
    syncs = sync_counts(run.data_dir)
    blobs = await stored_blobs(server.url)
    before = cpu_seconds(pids)
    result = await load
    cpu = cpu_seconds(pids) - before
    blobs = await stored_blobs(server.url) - blobs
    waited = await lock_wait_seconds(server.url) - waited
    after = sync_counts(run.data_dir)
    if result.problems:
        print(f"  {scenario}: {len(result.problems)} problem(s), first: {result.problems[0]}")
    delta = None if syncs is None or after is None else SyncCounts(after.calls - syncs.calls, after.skips - syncs.skips)
    return Figure(
        run.loader,
        run.tree,
        run.fsync,
        scenario,
        run.processes,
        result.files,
        result.seconds,
        result.p50_ms,
        result.p99_ms,
        cpu,
        waited,
        result.stored,
        result.failed,
        delta,
        result.files * nbytes_per_file,
        result.client_cpu_s,
        blobs,
    )


def server_for(args: argparse.Namespace, tree: Path, data_dir: Path, env: dict[str, str]) -> ServerProcess:
    """`rhinobox serve` from checkout `tree`: its modules first on the path, never this directory's."""
    server = rhinobox_server(data_dir, **env)
    if tree.resolve() != REPO_ROOT:
        # PYTHONSAFEPATH: `-m` would put the working directory (this checkout) first; members inherit it.
        server.env = {**server.env, "PYTHONPATH": os.fspath(tree.resolve()), "PYTHONSAFEPATH": "1"}
    # Unpinned, the server still gets every CPU: it would otherwise inherit this process's pinning.
    cpus = args.server_cpus or ",".join(str(cpu) for cpu in sorted(args.usable_cpus))
    server.argv = ["taskset", "-c", cpus, *server.argv]
    return server


async def small_file_scenarios(args: argparse.Namespace, run: Run, rng: random.Random) -> list[Figure]:
    """single and batch, from wrk or from aiohttp with bodies built before timing starts."""
    url = run.server.url + "/ingest"
    if run.loader == "wrk":
        return [
            await measure(run, "single", wrk_load(url, args, 1, args.single_requests, args.connections), FILE_SIZE),
            await measure(
                run,
                "batch",
                wrk_load(url, args, args.batch_files, args.batch_requests, args.batch_connections),
                FILE_SIZE,
            ),
        ]
    singles = [multipart_body([f]) for f in small_files(rng, args.single_requests, FILE_SIZE)]
    batches = [multipart_body(small_files(rng, args.batch_files, FILE_SIZE)) for _ in range(args.batch_requests)]
    batch_files = args.batch_files * args.batch_requests
    return [
        await measure(run, "single", aiohttp_load(url, singles, len(singles), args.connections), FILE_SIZE),
        await measure(run, "batch", aiohttp_load(url, batches, batch_files, args.batch_connections), FILE_SIZE),
    ]


async def run_count(
    args: argparse.Namespace,
    loader: str,
    tree: tuple[str, Path],
    fsync: str,
    processes: int,
    workdir: Path,
    seed: int,
    with_large: bool,
) -> list[Figure]:
    rng = random.Random(seed)
    data_dir = workdir / f"{loader}-{tree[0]}-{fsync}-n{processes}-{seed}"
    env = {"RHINOBOX_PROCESSES": str(processes), "RHINOBOX_FSYNC": fsync}
    server = server_for(args, tree[1], data_dir, env)
    run = Run(loader, tree[0], fsync, processes, server, data_dir)
    figures = []
    with server:
        warm = [multipart_body([f]) for f in small_files(rng, 200, FILE_SIZE)]
        await closed_loop(server.url + "/ingest", warm, args.connections)
        figures += await small_file_scenarios(args, run, rng)
        if with_large and args.large_count and args.large_mib:
            size = args.large_mib * MIB
            large = [Streamed(seed * 1000 + i, size) for i in range(args.large_count)]
            scenario = f"large {args.large_count}x{args.large_mib}MiB"
            streamed = aiohttp_load(server.url + "/ingest", large, len(large), len(large))
            figures.append(await measure(replace(run, loader="aiohttp"), scenario, streamed, size))
    shutil.rmtree(data_dir, ignore_errors=True)
    return figures


def _sync_cells(f: Figure) -> str:
    if f.syncs is None:
        return "- | -"
    turns = f.syncs.calls + f.syncs.skips
    return f"{1000 * f.syncs.calls / max(f.files, 1):.1f} | {100 * f.syncs.skips / max(turns, 1):.0f}%"


def _blobs_cell(f: Figure) -> str:
    """Blobs the server gained; marked where that is not one per file sent (duplicates, or lost files)."""
    return f"{f.blobs_added}" if f.blobs_added == f.files else f"**{f.blobs_added} != {f.files} files**"


def render(figures: Sequence[Figure]) -> str:
    lines = [
        "| loader | tree | fsync | scenario | processes | files/s | MB/s | p50 ms | p99 ms | server CPU ms/file |"
        " client CPU ms/file | write-lock wait ms/file | syncfs per 1k files | turns covered | stored | failed |"
        " blobs added |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(
            f"| {f.loader} | {f.tree} | {f.fsync} | {f.scenario} | {f.processes} | {f.files_per_s:.0f} |"
            f" {f.mb_per_s:.0f} | {f.p50_ms:.1f} | {f.p99_ms:.1f} | {f.cpu_ms_per_file:.2f} |"
            f" {1000 * f.client_cpu_s / max(f.files, 1):.3f} | {1000 * f.lock_wait_s / max(f.files, 1):.3f} |"
            f" {_sync_cells(f)} | {f.stored} | {f.failed} | {_blobs_cell(f)} |"
        )
    return "\n".join(lines)


def medians(figures: Sequence[Figure]) -> list[Figure]:
    """Per (loader, tree, fsync, scenario, processes): the run with the median server CPU per file."""
    keyed: dict[tuple[str, str, str, str, int], list[Figure]] = {}
    for figure in figures:
        key = (figure.loader, figure.tree, figure.fsync, figure.scenario, figure.processes)
        keyed.setdefault(key, []).append(figure)
    chosen = []
    for runs in keyed.values():
        middle = statistics.median_low([f.cpu_ms_per_file for f in runs])
        chosen.append(next(f for f in runs if f.cpu_ms_per_file == middle))
    return sorted(chosen, key=lambda f: (f.fsync, f.scenario != "single", f.scenario, f.processes, f.loader, f.tree))


def parse_loaders(spec: str) -> list[str]:
    """`wrk,aiohttp` (alternated); default: wrk where Debian's is installed, else aiohttp."""
    if not spec:
        return ["wrk" if wrk_available() else "aiohttp"]
    loaders = spec.split(",")
    if unknown := set(loaders) - set(LOADERS):
        raise SystemExit(f"unknown loader(s) {sorted(unknown)}; known: {', '.join(LOADERS)}")
    if "wrk" in loaders:
        require_wrk()
    return loaders


def parse_trees(spec: str) -> list[tuple[str, Path]]:
    """`label=dir,...` (or one bare dir); default: this checkout."""
    if not spec:
        return [("this", REPO_ROOT)]
    trees = []
    for item in spec.split(","):
        label, _, directory = item.rpartition("=")
        trees.append((label or directory, Path(directory)))
    return trees


async def main_async(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.counts.split(",")]
    trees = parse_trees(args.trees)
    modes = args.fsync.split(",")
    loaders = parse_loaders(args.loader)
    print(f"load generator for single and batch: {', '.join(loaders)}", flush=True)
    args.usable_cpus = os.sched_getaffinity(0)
    if args.client_cpus:
        # This process is the aiohttp client (and idles while wrk runs, pinned by taskset itself).
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    workdir = Path(tempfile.mkdtemp(prefix="rhinobox-processes-", dir=args.workdir))
    figures: list[Figure] = []
    try:
        for repeat in range(args.repeat):
            # Alternating, so a change in the machine's load hits every loader, tree, mode and N alike.
            for fsync in modes:
                for processes in counts:
                    for loader in loaders:
                        # The large scenario streams with aiohttp whatever the loader: once per N is enough.
                        with_large = loader == loaders[0]
                        for tree in trees:
                            seed = args.seed + repeat
                            run = await run_count(args, loader, tree, fsync, processes, workdir, seed, with_large)
                            figures += run
                            print("\n".join(render(run).splitlines()[2:]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pinning = f"client on CPUs {args.client_cpus}" if args.client_cpus else "client unpinned"
    server_cpus = args.server_cpus or ",".join(str(cpu) for cpu in sorted(args.usable_cpus))
    print(f"\nmedian CPU/file of {args.repeat} run(s) per row; {pinning}; server on CPUs {server_cpus}")
    print(render(medians(figures)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="1,2", help="serving process counts to measure, comma-separated")
    p.add_argument("--repeat", type=int, default=1, help="runs per count (alternating); the median is reported")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fsync", default="always", help="fsync modes to measure, comma-separated (always,never)")
    p.add_argument("--trees", default="", help="checkouts to run the server from: label=dir,... (default: this one)")
    p.add_argument("--connections", type=int, default=32, help="single: concurrent connections")
    p.add_argument("--single-requests", type=int, default=2000)
    p.add_argument("--batch-files", type=int, default=1000)
    p.add_argument("--batch-requests", type=int, default=6)
    p.add_argument("--batch-connections", type=int, default=2, help="batch: requests in flight at once")
    p.add_argument("--large-count", type=int, default=8, help="large: uploads at once (0: skip the scenario)")
    p.add_argument("--large-mib", type=int, default=256, help="large: MiB per upload")
    p.add_argument(
        "--loader", default="", help="single and batch load: wrk, aiohttp or both (default: wrk if installed)"
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (at most the connections)")
    p.add_argument("--client-cpus", default="", help="pin the client (wrk, or this process) to these CPUs (e.g. 1)")
    p.add_argument("--server-cpus", default="", help="pin the server to these CPUs with taskset (e.g. 0-15)")
    p.add_argument("--workdir", default=None, help="where temp data dirs go (default: $TMPDIR)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
