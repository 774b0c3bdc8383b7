"""Resumable upload (tus, in PATCHes) against one multipart POST of the same size: MB/s, server CPU, peak RSS.

Each mode runs against a fresh server (so its peak RSS is its own), alternating, with distinct content
per run (nothing is a duplicate). Usage:

    python -m benchmarks.resumable --size-mib 1024 --chunk-mib 8 --runs 3 --workdir /dev/shm
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import blake3

MIB: Final = 1024 * 1024
_BANNER: Final = re.compile(rb"listening on (http://[^\s]+)")
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
READ_BLOCK: Final = 4 * MIB


@dataclass(frozen=True, slots=True)
class Run:
    mode: str
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float


def make_file(path: Path, seed: int, size: int) -> None:
    with open(path, "wb") as out:
        for offset in range(0, size, READ_BLOCK):
            out.write(blake3.blake3(seed.to_bytes(8, "big")).digest(length=min(READ_BLOCK, size - offset), seek=offset))


@contextmanager
def server(data_dir: Path) -> Iterator[tuple[str, int]]:
    env = {**os.environ, "RHINOBOX_DATA_DIR": str(data_dir), "RHINOBOX_ADDR": "127.0.0.1:0", "RHINOBOX_FSYNC": "never"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rhinobox", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            match = _BANNER.search(line)
            if match:
                yield match.group(1).decode(), proc.pid
                return
            if not line:
                raise RuntimeError("the server did not start")
    finally:
        proc.terminate()
        proc.wait(30)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            yield block


async def send_multipart(url: str, path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("file", _file_chunks(path), filename=path.name, content_type="application/octet-stream")
        async with session.post(f"{url}/ingest", data=form) as response:
            assert response.status == 200, await response.text()


async def send_resumable(url: str, path: Path, chunk: int) -> None:
    size = path.stat().st_size
    tus = {"Tus-Resumable": "1.0.0"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/uploads/", headers={**tus, "Upload-Length": str(size)}) as response:
            assert response.status == 201, await response.text()
            upload = url + response.headers["Location"]
        with open(path, "rb") as handle:
            offset = 0
            while offset < size:
                body = handle.read(chunk)
                headers = {**tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
                async with session.patch(upload, data=body, headers=headers) as response:
                    assert response.status == 204, await response.text()
                    offset = int(response.headers["Upload-Offset"])


def measure(mode: str, path: Path, workdir: Path, chunk: int) -> Run:
    data_dir = Path(tempfile.mkdtemp(prefix="rhinobox-bench-", dir=workdir))
    try:
        with server(data_dir) as (url, pid):
            cpu_before = _cpu_seconds(pid)
            started = time.perf_counter()
            if mode == "multipart":
                asyncio.run(send_multipart(url, path))
            else:
                asyncio.run(send_resumable(url, path, chunk))
            seconds = time.perf_counter() - started
            return Run(mode, seconds, _cpu_seconds(pid) - cpu_before, _peak_rss_mib(pid))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    size = args.size_mib * MIB
    runs: dict[str, list[Run]] = {"multipart": [], "resumable": []}
    source_dir = Path(tempfile.mkdtemp(prefix="rhinobox-bench-src-", dir=args.workdir))
    try:
        for index in range(args.runs):
            for mode in runs:
                path = source_dir / f"{mode}-{index}.bin"
                make_file(path, seed=hash((mode, index)) & 0xFFFFFFFF, size=size)
                runs[mode].append(measure(mode, path, args.workdir, args.chunk_mib * MIB))
                path.unlink()
    finally:
        shutil.rmtree(source_dir, ignore_errors=True)
    print(f"{args.size_mib} MiB file, {args.chunk_mib} MiB PATCHes, fsync=never, {args.runs} runs each (median)")
    print(f"{'mode':<10} {'MB/s':>8} {'server CPU s':>13} {'peak RSS MiB':>13}")
    medians = {}
    for mode, results in runs.items():
        rate = statistics.median(size / 1e6 / r.seconds for r in results)
        medians[mode] = rate
        cpu = statistics.median(r.cpu_seconds for r in results)
        rss = statistics.median(r.peak_rss_mib for r in results)
        print(f"{mode:<10} {rate:>8.0f} {cpu:>13.2f} {rss:>13.0f}")
    print(f"resumable / multipart throughput: {medians['resumable'] / medians['multipart']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
