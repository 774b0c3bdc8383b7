"""benchmarks/wrkload.py and its wrk Lua script against the real server: every file sent is distinct and stored."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from benchmarks.wrkload import FILE_SIZE, WrkResult, run_wrk
from tests.server_process import RhinoBoxProcess, catalog_rows

THREADS: Final = 2
CONNECTIONS: Final = 4
DURATION_S: Final = 1.0
BOUND_S: Final = 120.0  # with a request count: a bound, so a lost request fails the test instead of hanging it


async def server_stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/stats") as response:
        assert response.status == 200, await response.text()
        stats: dict[str, Any] = await response.json()
    return stats


def assert_clean(result: WrkResult) -> None:
    """Every request answered 200 with every file stored, and figures that mean something."""
    assert result.requests > 0
    assert result.non_200 == 0
    assert result.socket_errors == 0
    assert result.unparsed == 0
    assert (result.stored, result.duplicates, result.failed) == (result.files, 0, 0)
    assert result.seconds > 0
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.client_cpu_s > 0


@pytest.mark.parametrize(("files_per_request", "requests"), [(1, 400), (50, 20)])
async def test_a_request_count_stores_exactly_the_files_wrk_sent(
    tmp_path: Path, files_per_request: int, requests: int
) -> None:
    first_cpu = str(min(os.sched_getaffinity(0)))
    with RhinoBoxProcess(tmp_path / "data", RHINOBOX_FSYNC="never") as server:
        result = await asyncio.to_thread(
            run_wrk,
            server.url + "/ingest",
            files_per_request=files_per_request,
            connections=CONNECTIONS,
            threads=THREADS,
            requests=requests,
            duration_s=BOUND_S,
            cpus=first_cpu,
        )
        stats = await server_stats(server.url)
    assert_clean(result)
    assert (result.requests, result.sent, result.files) == (requests, requests, requests * files_per_request)
    # Distinct and well-formed: one new blob per file sent, each of the size the script was given.
    assert stats["blobs"] == stats["uploads"] == result.files
    assert stats["bytes_stored"] == result.files * FILE_SIZE


def upload_count(data_dir: Path) -> int:
    """Upload rows, read straight from the SQLite file of a stopped server."""
    db = sqlite3.connect(data_dir / "catalog.sqlite3")
    try:
        count: int = db.execute("SELECT count(*) FROM uploads").fetchone()[0]
    finally:
        db.close()
    return count


async def test_a_duration_stores_every_answered_file_and_at_most_the_ones_in_flight(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="never") as server:
        result = await asyncio.to_thread(
            run_wrk,
            server.url + "/ingest",
            files_per_request=1,
            connections=CONNECTIONS,
            threads=THREADS,
            duration_s=DURATION_S,
        )
    # Read once the server has stopped: requests in flight when wrk stopped were built (sent) but not
    # answered, and the server may have stored them after wrk's last answer.
    blobs = catalog_rows(data_dir)
    assert_clean(result)
    assert result.files <= len(blobs) <= result.sent
    assert upload_count(data_dir) == len(blobs)
    assert set(blobs.values()) == {FILE_SIZE}


def test_connections_that_do_not_split_over_the_threads_are_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        run_wrk("http://127.0.0.1:9/ingest", files_per_request=1, connections=3, threads=2, requests=10)
