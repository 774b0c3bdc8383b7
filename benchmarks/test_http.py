"""Ingest over a real socket: the real server (`python -m rhinobox serve`) and aiohttp's client.

    .venv/bin/pytest benchmarks/test_http.py --benchmark-enable -s

Prints files/s or MB/s; never fails on speed. The asserts check that every file was answered and stored.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import uvloop

from benchmarks.httpload import Body, LoadResult, closed_loop
from benchmarks.procs import ServerProcess, rhinobox_server
from benchmarks.workload import Streamed, multipart_body, small_files

KIB: Final = 1024
MIB: Final = 1024 * 1024
SMALL: Final = 4 * KIB
ROUNDS: Final = 3
LARGE_MIB: Final = 256


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with rhinobox_server(tmp_path_factory.mktemp("http") / "data", RHINOBOX_FSYNC="always") as process:
        yield process


class Rounds:
    """Fresh (never uploaded) bodies for each round, and the result of the last one."""

    def __init__(self, make: Callable[[random.Random], list[Body]], seed: int) -> None:
        self.rng = random.Random(seed)
        self.make = make
        self.bodies: list[Body] = []
        self.last = LoadResult()

    def setup(self) -> None:
        self.bodies = self.make(self.rng)

    def runner(self, url: str, connections: int) -> Callable[[], None]:
        def run() -> None:
            self.last = uvloop.run(closed_loop(url + "/ingest", self.bodies, connections))

        return run


def report(benchmark: Any, label: str, files: int, nbytes: int, result: LoadResult) -> None:
    stats = getattr(benchmark, "stats", None)
    mean = stats.stats.mean if stats is not None else result.seconds
    benchmark.extra_info.update(files_per_s=files / mean, mb_per_s=nbytes / MIB / mean)
    print(f"\n{label}: {files / mean:,.0f} files/s, {nbytes / MIB / mean:,.1f} MB/s ({mean * 1000:.1f} ms/round)")


def check_stored(result: LoadResult, files: int, server: ServerProcess) -> None:
    log_tail = server.log_path.read_text(errors="replace")[-2000:] if server.log_path.exists() else ""
    assert not result.errors, (result.errors[:3], log_tail)
    assert result.files == files
    assert result.stored == files
    assert result.failed == 0


@pytest.mark.parametrize("connections", [1, 32])
def test_single_small_file_per_request(benchmark: Any, server: ServerProcess, connections: int) -> None:
    """One 4 KiB file per request, 500 requests per round, on 1 or 32 connections."""
    requests = 500
    rounds = Rounds(lambda rng: [multipart_body([d]) for d in small_files(rng, requests, SMALL)], seed=connections)
    benchmark.pedantic(rounds.runner(server.url, connections), setup=rounds.setup, rounds=ROUNDS)
    check_stored(rounds.last, requests, server)
    report(benchmark, f"single 4 KiB, {connections} connections", requests, requests * SMALL, rounds.last)


@pytest.mark.parametrize("files", [100, 1000])
def test_batch_of_small_files(benchmark: Any, server: ServerProcess, files: int) -> None:
    """One request carrying `files` distinct 4 KiB files."""
    rounds = Rounds(lambda rng: [multipart_body(small_files(rng, files, SMALL))], seed=100 + files)
    benchmark.pedantic(rounds.runner(server.url, 1), setup=rounds.setup, rounds=ROUNDS)
    check_stored(rounds.last, files, server)
    report(benchmark, f"batch {files} x 4 KiB", files, files * SMALL, rounds.last)


def test_large_file(benchmark: Any, server: ServerProcess) -> None:
    """One 256 MiB file streamed from a generator (the client never holds it)."""
    size = LARGE_MIB * MIB
    rounds = Rounds(lambda rng: [Streamed(seed=rng.getrandbits(32), size=size)], seed=256)
    benchmark.pedantic(rounds.runner(server.url, 1), setup=rounds.setup, rounds=1)
    check_stored(rounds.last, 1, server)
    report(benchmark, f"large {LARGE_MIB} MiB", 1, size, rounds.last)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_batch_pool_size(benchmark: Any, tmp_path: Path, workers: int) -> None:
    """The 1,000-file batch with RHINOBOX_WORKERS=1, 2, 4: does the pool beat one thread?

    (The inline, no-thread variant of the same work is in test_stages.py::test_prepare_and_commit_batch.)
    """
    files = 1000
    rounds = Rounds(lambda rng: [multipart_body(small_files(rng, files, SMALL))], seed=1000 + workers)
    with rhinobox_server(tmp_path / "data", RHINOBOX_FSYNC="always", RHINOBOX_WORKERS=str(workers)) as process:
        # One warm-up request so thread start-up and libmagic loading are not in round one.
        uvloop.run(closed_loop(process.url + "/ingest", [multipart_body(small_files(random.Random(-1), 8, SMALL))], 1))
        benchmark.pedantic(rounds.runner(process.url, 1), setup=rounds.setup, rounds=ROUNDS)
        check_stored(rounds.last, files, process)
    report(benchmark, f"batch 1,000 x 4 KiB, RHINOBOX_WORKERS={workers}", files, files * SMALL, rounds.last)
