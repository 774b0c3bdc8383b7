"""End-to-end load generator: RhinoBox against its floors, measured in one run so every figure is a ratio.

    .venv/bin/python -m benchmarks.load                       # every scenario, quick sizes
    .venv/bin/python -m benchmarks.load batch single --fsync always,never
    .venv/bin/python -m benchmarks.load large --large-mib 1024
    .venv/bin/python -m benchmarks.load batch --url http://127.0.0.1:8090   # an already running server

Each scenario starts a fresh RhinoBox (`python -m rhinobox serve`, temp data dir, free loopback port)
and the floor servers (benchmarks/floor_server.py), sends them the same seeded bytes, and measures the
disk floor and the hash floor (benchmarks/floors.py) on those bytes too. Figures: files/s, MB/s,
p50/p95/p99 latency, server CPU seconds, and the server's peak RSS growth (VmHWM after a reset to the
idle RSS). Bounded: every count and size has a default that runs in seconds; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import blake3
import uvloop

from benchmarks.floors import (
    FileLike,
    delete_tree,
    discard,
    disk_floor,
    hash_floor,
    pack_floor,
    settle_after_deletes,
)
from benchmarks.httpload import Body, LoadResult, closed_loop, paced
from benchmarks.procs import ServerProcess, floor_server, rhinobox_server
from benchmarks.profiling import Profiler, summarise
from benchmarks.workload import Streamed, mixed_sizes, multipart_body, ring_blocks, rng_for, small_files

__all__ = ["main"]

KIB: Final = 1024
MIB: Final = 1024 * 1024
SCENARIOS: Final = ("batch", "single", "large", "mixed", "dup", "latency", "storesize")
DEFAULT_SCENARIOS: Final = ("batch", "single", "large", "mixed", "dup", "latency")
URL_SCENARIOS: Final = ("batch", "single", "large", "mixed")
FLOOR_PARSERS: Final = ("aiohttp", "pymp")
WARMUP_FILES: Final = 64


@dataclass(slots=True)
class Measure:
    """One target's figures in one scenario."""

    target: str
    files: int
    nbytes: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    rss_idle_kib: int | None = None
    rss_peak_kib: int | None = None
    cpu_seconds: float | None = None
    user_cpu_seconds: float | None = None
    note: str = ""
    valid: bool = True  # False when any request failed: such a figure is shown but never used in a ratio

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / MIB / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def rss_growth_mib(self) -> float | None:
        if self.rss_idle_kib is None or self.rss_peak_kib is None:
            return None
        return (self.rss_peak_kib - self.rss_idle_kib) / KIB


@dataclass(slots=True)
class Ratio:
    label: str
    value: float
    target: str


@dataclass(slots=True)
class ScenarioReport:
    name: str
    description: str
    measures: list[Measure] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)

    def get(self, target: str) -> Measure | None:
        return next((m for m in self.measures if m.target == target), None)

    def ratio(self, label: str, numerator: str, denominator: str, target: str, *, by: str = "files") -> None:
        top, bottom = self.get(numerator), self.get(denominator)
        if top is None or bottom is None:
            return
        if not (top.valid and bottom.valid):
            self.ratios.append(Ratio(label, float("nan"), target + " (a request failed: no ratio)"))
            return
        low = bottom.files_per_s if by == "files" else bottom.mb_per_s
        high = top.files_per_s if by == "files" else top.mb_per_s
        if low:
            self.ratios.append(Ratio(label, high / low, target))


class Bench:
    """Runs scenarios; owns the temp work directory and the options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        waited = settle_after_deletes(Path(args.workdir or tempfile.gettempdir()))
        if waited:
            print(f"(waited {waited:.0f} s for the inodes the last run freed: benchmarks/floors.py)", flush=True)
        self.work = Path(tempfile.mkdtemp(prefix="rhinobox-bench-", dir=args.workdir))
        self.ring = ring_blocks()
        self.fsync_modes: list[str] = args.fsync.split(",")
        self.profile_dir: Path | None = args.profile
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.single_peak: float | None = None

    def close(self) -> None:
        delete_tree(self.work)

    # -- servers -----------------------------------------------------------------------------

    def fresh_dir(self, name: str) -> Path:
        path = self.work / name
        discard(path)
        return path

    def rhinobox(self, fsync: str, data_dir: Path | None = None) -> ServerProcess:
        env = {"RHINOBOX_FSYNC": fsync, "RHINOBOX_MAX_UPLOAD_MB": str(self.args.max_upload_mb)}
        if self.args.workers:
            env["RHINOBOX_WORKERS"] = str(self.args.workers)
        return rhinobox_server(data_dir or self.fresh_dir(f"rhinobox-{fsync}"), **env)

    def measure_http(
        self,
        report: ScenarioReport,
        target: str,
        server: ServerProcess | None,
        bodies: Sequence[Body],
        connections: int,
        files: int,
        nbytes: int,
        *,
        rate: float | None = None,
    ) -> Measure:
        """Warm the server up, reset its peak RSS, send `bodies`, and read its CPU time and peak RSS."""
        url = (server.url if server is not None else self.args.url) + "/ingest"
        warm = small_files(rng_for(self.args.seed, f"warmup/{report.name}/{target}"), WARMUP_FILES, 4 * KIB)
        warmup = [multipart_body(warm[:1]), multipart_body(warm[1:])]
        uvloop.run(closed_loop(url, warmup, 1))
        idle = peak = cpu0 = user0 = None
        if server is not None:
            idle = server.status_kib("VmRSS")
            server.reset_peak()
            cpu0, user0 = server.cpu_seconds(), server.user_cpu_seconds()
        profile_path = None
        if self.profile_dir is not None and server is not None and target.startswith("rhinobox"):
            profile_path = self.profile_dir / f"{report.name}-{target.replace(' ', '_')}.txt"
        with Profiler(server.pid if server else 0, profile_path, gil_only=self.args.profile_gil):
            if rate is None:
                result = uvloop.run(closed_loop(url, bodies, connections))
            else:
                result = uvloop.run(paced(url, bodies, rate))
        cpu = user = None
        if server is not None and cpu0 is not None and user0 is not None:
            cpu, user = server.cpu_seconds() - cpu0, server.user_cpu_seconds() - user0
            peak = server.status_kib("VmHWM")
        if profile_path is not None and profile_path.exists():
            report.profiles[target] = summarise(profile_path.read_text(), top=15)
        measure = Measure(target, files, nbytes, result.seconds, [s * 1000 for s in result.latencies], idle, peak, cpu)
        measure.user_cpu_seconds = user
        measure.note = _note(result, files)
        measure.valid = not result.errors and result.files == files and not result.failed
        if not measure.valid and server is not None and server.log_path.exists():
            print(f"{target}: requests failed; server log tail:", file=sys.stderr)
            print(server.log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
        report.measures.append(measure)
        return measure

    def http_targets(
        self, report: ScenarioReport, bodies: Sequence[Body], connections: int, files: int, nbytes: int
    ) -> None:
        """The floor servers, then RhinoBox per fsync mode, on the same bodies."""
        if self.args.url:
            self.measure_http(report, "rhinobox (--url)", None, bodies, connections, files, nbytes)
            return
        if not self.args.no_http_floor:
            for parser in FLOOR_PARSERS:
                with floor_server(self.fresh_dir(f"floor-{parser}"), parser) as server:
                    self.measure_http(report, f"http floor {parser}", server, bodies, connections, files, nbytes)
                discard(self.work / f"floor-{parser}")
        for mode in self.fsync_modes:
            with self.rhinobox(mode) as server:
                self.measure_http(report, f"rhinobox fsync={mode}", server, bodies, connections, files, nbytes)
            discard(self.work / f"rhinobox-{mode}")

    def local_floors(self, report: ScenarioReport, batches: Sequence[Sequence[FileLike]], nbytes: int) -> None:
        """Disk floor (per fsync mode, 1 and 2 threads: the better counts) and hash floor, same bytes."""
        files = sum(len(b) for b in batches)
        names = [[blake3.blake3(f"{report.name}/{b}/{i}".encode()).hexdigest() for i in range(len(batch))]
                 for b, batch in enumerate(batches)]  # fmt: skip
        for mode in self.fsync_modes:
            best = min(
                disk_floor(self.work / "disk-floor", batches, names, sync=mode == "always", ring=self.ring, threads=t)
                for t in (1, 2)
            )
            report.measures.append(
                Measure(f"disk floor fsync={mode}", files, nbytes, best, note="best of 1, 2 threads")
            )
        flat = [f for batch in batches for f in batch]
        report.measures.append(Measure("hash floor", files, nbytes, hash_floor(flat, self.ring)))

    # -- scenarios ---------------------------------------------------------------------------

    def batch(self) -> ScenarioReport:
        a = self.args
        report = ScenarioReport(
            "batch", f"{a.batch_requests} requests x {a.batch_files} x 4 KiB distinct files, 1 connection"
        )
        data = small_files(rng_for(a.seed, "batch"), a.batch_requests * a.batch_files, 4 * KIB, a.kind)
        batches = [data[i : i + a.batch_files] for i in range(0, len(data), a.batch_files)]
        bodies = [multipart_body(b) for b in batches]
        nbytes = len(data) * 4 * KIB
        self.local_floors(report, batches, nbytes)
        for mode in self.fsync_modes:
            seconds = pack_floor(self.work / "pack-floor", batches, sync=mode == "always")
            report.measures.append(
                Measure(f"pack floor fsync={mode}", len(data), nbytes, seconds, note="one file/batch")
            )
        self.http_targets(report, bodies, 1, len(data), nbytes)
        self.batch_ratios(report)
        return report

    # -- ratios (computed again on the medians when --repeat > 1) ---------------------------

    def batch_ratios(self, report: ScenarioReport) -> None:
        self.small_file_ratios(report, disk_target=">= 0.8 (fsync=always)")
        for mode in self.fsync_modes:
            report.ratio(
                f"pack floor / disk floor fsync={mode}", f"pack floor fsync={mode}", f"disk floor fsync={mode}", "-"
            )

    def single_ratios(self, report: ScenarioReport) -> None:
        self.small_file_ratios(report, disk_target="-", http_target=">= 0.8")
        rb = report.get(f"rhinobox fsync={self.fsync_modes[0]}")
        if rb is not None:
            self.single_peak = rb.files_per_s

    def large_ratios(self, report: ScenarioReport) -> None:
        hash_m = report.get("hash floor")
        for mode in self.fsync_modes:
            disk_m = report.get(f"disk floor fsync={mode}")
            rb = report.get(f"rhinobox fsync={mode}")
            if hash_m and disk_m and rb and rb.valid:
                floor = min(hash_m.mb_per_s, disk_m.mb_per_s)
                report.ratios.append(Ratio(f"rhinobox fsync={mode} / min(disk, hash)", rb.mb_per_s / floor, ">= 0.7"))
            for parser in FLOOR_PARSERS:
                report.ratio(
                    f"rhinobox fsync={mode} / http floor {parser}", f"rhinobox fsync={mode}",
                    f"http floor {parser}", "-", by="bytes",
                )  # fmt: skip

    def mixed_ratios(self, report: ScenarioReport) -> None:
        for mode in self.fsync_modes:
            rb = f"rhinobox fsync={mode}"
            report.ratio(f"{rb} / disk floor", rb, f"disk floor fsync={mode}", "-", by="bytes")
            report.ratio(f"{rb} / hash floor", rb, "hash floor", "-", by="bytes")
            report.ratio(f"{rb} / http floor pymp", rb, "http floor pymp", "-", by="bytes")

    def dup_ratios(self, report: ScenarioReport) -> None:
        for mode in self.fsync_modes:
            report.ratio(f"dup / new fsync={mode}", f"dup fsync={mode}", f"new fsync={mode}", ">= 2")

    def latency_ratios(self, report: ScenarioReport) -> None:
        """Latency has no ratio: its target is p99 under 10 ms at half the single peak."""

    def storesize_ratios(self, report: ScenarioReport) -> None:
        prefill = self.args.prefill
        for mode in self.fsync_modes:
            report.ratio(
                f"empty / {prefill:,} fsync={mode} (per-file cost ratio)",
                f"empty fsync={mode}", f"{prefill:,} blobs fsync={mode}", "<= 1.2",
            )  # fmt: skip

    def small_file_ratios(self, report: ScenarioReport, disk_target: str, http_target: str = "-") -> None:
        for mode in self.fsync_modes:
            rb = f"rhinobox fsync={mode}"
            report.ratio(f"{rb} / disk floor fsync={mode}", rb, f"disk floor fsync={mode}", disk_target)
            for parser in FLOOR_PARSERS:
                report.ratio(f"{rb} / http floor {parser}", rb, f"http floor {parser}", http_target)

    def single(self) -> ScenarioReport:
        a = self.args
        report = ScenarioReport("single", f"{a.single_requests} requests x one 4 KiB file, {a.connections} connections")
        data = small_files(rng_for(a.seed, "single"), a.single_requests, 4 * KIB, a.kind)
        bodies = [multipart_body([d]) for d in data]
        self.http_targets(report, bodies, a.connections, len(data), len(data) * 4 * KIB)
        self.single_ratios(report)
        return report

    def large(self) -> ScenarioReport:
        a = self.args
        size = a.large_mib * MIB
        report = ScenarioReport("large", f"one {a.large_mib} MiB file, streamed from a generator")
        file = Streamed(seed=hash((a.seed, "large")) & 0xFFFFFFFF, size=size)
        self.local_floors(report, [[file]], size)
        self.http_targets(report, [file], 1, 1, size)
        self.large_ratios(report)
        return report

    def mixed(self) -> ScenarioReport:
        a = self.args
        rng = rng_for(a.seed, "mixed")
        sizes = mixed_sizes(rng, a.mixed_count, 50 * KIB, 20 * MIB, a.mixed_total_mib * MIB)
        files = [Streamed(seed=rng.getrandbits(32), size=s, name=f"m{i}.bin") for i, s in enumerate(sizes)]
        nbytes = sum(sizes)
        report = ScenarioReport(
            "mixed", f"{len(files)} files 50 KiB-20 MiB (log-uniform, {nbytes / MIB:.0f} MiB), one per request, 4 conns"
        )
        self.local_floors(report, [files], nbytes)
        self.http_targets(report, files, 4, len(files), nbytes)
        self.mixed_ratios(report)
        return report

    def dup(self) -> ScenarioReport:
        a = self.args
        report = ScenarioReport(
            "dup", f"{a.dup_requests} requests x {a.dup_files} x {a.dup_kib} KiB: stored new, then re-uploaded"
        )
        data = small_files(rng_for(a.seed, "dup"), a.dup_requests * a.dup_files, a.dup_kib * KIB, a.kind)
        bodies = [multipart_body(data[i : i + a.dup_files]) for i in range(0, len(data), a.dup_files)]
        nbytes = len(data) * a.dup_kib * KIB
        for mode in self.fsync_modes:
            with self.rhinobox(mode) as server:
                self.measure_http(report, f"new fsync={mode}", server, bodies, 1, len(data), nbytes)
                self.measure_http(report, f"dup fsync={mode}", server, bodies, 1, len(data), nbytes)
        self.dup_ratios(report)
        return report

    def latency(self) -> ScenarioReport:
        a = self.args
        if a.latency_rate:
            rate, why = a.latency_rate, "as asked"
        else:
            if self.single_peak is None:
                self.single()
            assert self.single_peak is not None
            rate, why = self.single_peak / 2, "half the single peak"
        report = ScenarioReport("latency", f"one 4 KiB file per request, paced at {rate:.0f}/s ({why})")
        count = max(1, min(a.single_requests, int(rate * a.latency_seconds)))
        data = small_files(rng_for(a.seed, "latency"), count, 4 * KIB, a.kind)
        bodies = [multipart_body([d]) for d in data]
        if not a.no_http_floor:
            with floor_server(self.fresh_dir("floor-pymp"), "pymp") as server:
                self.measure_http(report, "http floor pymp", server, bodies, 64, count, count * 4 * KIB, rate=rate)
        for mode in self.fsync_modes:
            with self.rhinobox(mode) as server:
                self.measure_http(
                    report, f"rhinobox fsync={mode}", server, bodies, 64, count, count * 4 * KIB, rate=rate
                )
        return report

    def storesize(self) -> ScenarioReport:
        a = self.args
        report = ScenarioReport(
            "storesize",
            f"batch ({a.batch_requests} x {a.batch_files} x 4 KiB) on an empty store vs {a.prefill:,} blobs",
        )
        data = small_files(rng_for(a.seed, "storesize"), a.batch_requests * a.batch_files, 4 * KIB, a.kind)
        bodies = [multipart_body(data[i : i + a.batch_files]) for i in range(0, len(data), a.batch_files)]
        nbytes = len(data) * 4 * KIB
        for mode in self.fsync_modes:
            for label, count in (("empty", 0), (f"{a.prefill:,} blobs", a.prefill)):
                data_dir = self.fresh_dir(f"store-{mode}")
                seconds = prefill_store(data_dir, count) if count else 0.0
                with self.rhinobox(mode, data_dir) as server:
                    wait_reconciled(server.url)
                    m = self.measure_http(report, f"{label} fsync={mode}", server, bodies, 1, len(data), nbytes)
                    if count:
                        m.note += f"; prefill took {seconds:.0f}s"
                discard(data_dir)
        self.storesize_ratios(report)
        return report


def merge(runs: Sequence[ScenarioReport]) -> ScenarioReport:
    """One report of each target's median run (by throughput, failed runs left out); ratios are redone."""
    first = runs[0]
    merged = ScenarioReport(first.name, f"{first.description} (median of {len(runs)} runs)", profiles=first.profiles)
    for target in [m.target for m in first.measures]:
        found = [m for r in runs if (m := r.get(target)) is not None]
        # Paced runs all reach the same rate: their median is the one with the median p99.
        key = (lambda m: m.pct(99) or 0.0) if first.name == "latency" else (lambda m: m.files_per_s)
        usable = sorted((m for m in found if m.valid), key=key) or found
        median = usable[len(usable) // 2]
        spread = f"runs {usable[0].mb_per_s:,.1f}-{usable[-1].mb_per_s:,.1f} MB/s"
        median.note = f"{median.note}; {spread}" if median.note else spread
        merged.measures.append(median)
    return merged


def _note(result: LoadResult, files: int) -> str:
    parts = []
    if result.stored or result.duplicates or result.failed:
        parts.append(f"stored={result.stored} dup={result.duplicates} failed={result.failed}")
    if result.files != files:
        parts.append(f"ANSWERED {result.files} of {files} files")
    if result.errors:
        parts.append(f"{len(result.errors)} errors, first: {result.errors[0]}")
    return "; ".join(parts)


def prefill_store(data_dir: Path, count: int) -> float:
    """A store of `count` tiny blobs and their catalog rows, written directly (not through HTTP)."""
    from rhinobox.catalog.sqlite import SQLiteCatalog

    start = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    blobs = data_dir / "blobs"
    for prefix in range(256):
        (blobs / f"{prefix:02x}").mkdir(parents=True, exist_ok=True)
    (data_dir / "tmp").mkdir(exist_ok=True)

    async def schema() -> Path:
        catalog = SQLiteCatalog.in_data_dir(data_dir, durable=False)
        await catalog.open()
        await catalog.close()
        return catalog.path

    path = asyncio.run(schema())
    now = time.time()
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    step = 50_000
    for begin in range(0, count, step):
        digests = [blake3.blake3(i.to_bytes(8, "little")).hexdigest() for i in range(begin, min(count, begin + step))]
        for digest in digests:
            os.close(os.open(blobs / digest[:2] / digest, os.O_WRONLY | os.O_CREAT, 0o644))
        db.executemany(
            "INSERT INTO blobs (hash, size, mime, category, first_upload_at, last_upload_at, upload_count)"
            " VALUES (?, 0, 'application/octet-stream', 'other/octet-stream', ?, ?, 1)",
            [(d, now, now) for d in digests],
        )
        db.executemany(
            "INSERT INTO uploads (hash, name, category, uploaded_at) VALUES (?, 'prefill', 'other/octet-stream', ?)",
            [(d, now) for d in digests],
        )
        db.commit()
    db.close()
    os.sync()
    return time.perf_counter() - start


def wait_reconciled(url: str, timeout: float = 600.0) -> None:
    """Wait until the server's start-up reconciliation is done (it scans the whole store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/healthz") as response:
            if json.load(response)["reconcile"]["state"] in ("done", "failed"):
                return
        time.sleep(0.5)


# -- output ----------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(report: ScenarioReport) -> str:
    lines = [f"### {report.name}: {report.description}", ""]
    lines.append("| target | files/s | MB/s | p50 ms | p95 ms | p99 ms | server CPU ms/file | RSS growth MiB | note |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for m in report.measures:
        cpu = m.cpu_seconds * 1000 / m.files if m.cpu_seconds is not None and m.files else None
        lines.append(
            f"| {m.target} | {m.files_per_s:,.0f} | {m.mb_per_s:,.1f} | {_fmt(m.pct(50), '.1f')} | "
            f"{_fmt(m.pct(95), '.1f')} | {_fmt(m.pct(99), '.1f')} | {_fmt(cpu, '.3f')} | "
            f"{_fmt(m.rss_growth_mib, '.1f')} | {m.note} |"
        )
    if report.ratios:
        lines += ["", "| ratio | value | target |", "|---|---:|---|"]
        lines += [f"| {r.label} | {r.value:.2f} | {r.target} |" for r in report.ratios]
    for target, summary in report.profiles.items():
        lines += ["", f"profile of {target} (py-spy):", "```", summary, "```"]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", help=f"of {', '.join(SCENARIOS)} (default: all but storesize)")
    p.add_argument(
        "--url",
        default="",
        help="a running RhinoBox instead of starting one: batch, single, large, mixed only; no HTTP floors",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1, help="run each scenario N times; report each target's median")
    p.add_argument("--fsync", default="always", help="RHINOBOX_FSYNC mode(s), comma-separated: always,never")
    p.add_argument("--workers", type=int, default=0, help="RHINOBOX_WORKERS for the server (default: its own)")
    p.add_argument(
        "--kind", choices=("binary", "text", "media"), default="binary",
        help="small files: random bytes (libmagic's slow miss path), printable text, or media headers + random",
    )  # fmt: skip
    p.add_argument("--connections", type=int, default=32, help="single: concurrent connections")
    p.add_argument("--single-requests", type=int, default=2000)
    p.add_argument("--batch-files", type=int, default=1000)
    p.add_argument("--batch-requests", type=int, default=5)
    p.add_argument("--large-mib", type=int, default=256, help="large: file size (1024 and 4096 are the targets)")
    p.add_argument("--mixed-count", type=int, default=40)
    p.add_argument("--mixed-total-mib", type=int, default=256)
    p.add_argument("--dup-requests", type=int, default=10)
    p.add_argument("--dup-files", type=int, default=100)
    p.add_argument("--dup-kib", type=int, default=4)
    p.add_argument("--latency-seconds", type=float, default=5.0)
    p.add_argument(
        "--latency-rate", type=float, default=0.0,
        help="latency: requests/s (default: half the single peak measured in the same run); fix it to compare trees",
    )  # fmt: skip
    p.add_argument("--prefill", type=int, default=100_000, help="storesize: blobs already stored")
    p.add_argument("--max-upload-mb", type=int, default=8192)
    p.add_argument("--no-http-floor", action="store_true", help="skip the floor servers")
    p.add_argument("--profile", type=Path, default=None, help="py-spy the RhinoBox server; raw profiles go here")
    p.add_argument("--profile-gil", action="store_true", help="profile only the thread holding the GIL")
    p.add_argument("--workdir", default=None, help="where temp data dirs go (default: $TMPDIR)")
    p.add_argument("--json", type=Path, default=None, help="also write every measure as JSON here")
    args = p.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.url and not args.scenarios:
        args.scenarios = list(URL_SCENARIOS)
    if args.url and set(args.scenarios) - set(URL_SCENARIOS):
        p.error(f"with --url only {', '.join(URL_SCENARIOS)} can run (the others start their own servers)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    runners: dict[str, Callable[[], ScenarioReport]] = {name: getattr(bench, name) for name in SCENARIOS}
    reports = []
    print(f"# python -m benchmarks.load {' '.join(sys.argv[1:] if argv is None else argv)}", flush=True)
    try:
        for name in args.scenarios or DEFAULT_SCENARIOS:
            started = time.perf_counter()
            runs = [runners[name]() for _ in range(args.repeat)]
            report = runs[0] if len(runs) == 1 else merge(runs)
            if len(runs) > 1:
                getattr(bench, f"{name}_ratios")(report)
            reports.append(report)
            print(render(report) + f"({time.perf_counter() - started:.0f} s)\n", flush=True)
    finally:
        bench.close()
    if args.json is not None:
        payload = [
            {"name": r.name, "description": r.description, "ratios": [asdict(x) for x in r.ratios],
             "measures": [{**asdict(m), "files_per_s": m.files_per_s, "mb_per_s": m.mb_per_s,
                           "p50": m.pct(50), "p95": m.pct(95), "p99": m.pct(99)} for m in r.measures]}
            for r in reports
        ]  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
