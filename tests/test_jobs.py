"""Async ingest jobs: 202 + job, progress over Server-Sent Events, results in order, restarts, expiry."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from rhinobox.app import create_app
from rhinobox.jobs import JobManager, JobState, SQLiteJobStore
from rhinobox.jobs.manager import ResultSink
from tests.conftest import AiohttpClient, make_settings
from tests.helpers import blake3_hex, blob_files, form, spool_files
from tests.samples import SAMPLES, make_sample
from tests.server_process import RhinoBoxProcess, blob_problems, catalog_rows

Client = TestClient[web.Request, web.Application]


def mixed_files() -> list[tuple[str, bytes]]:
    """Every sample kind, a file large enough to spool, an empty file, and content repeated in-batch."""
    files = [make_sample(kind, seed) for seed, kind in enumerate(SAMPLES)]
    files.append(("big.bin", os.urandom(300 * 1024)))
    files.insert(3, ("empty.txt", b""))
    files.append(("again.png", files[0][1]))
    return files


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream, parsed by hand (the wire format, not our client)."""
    kind, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line == "":
            if data:
                yield kind, json.loads(data)
            kind, data = "message", ""
        elif line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data += line[len("data: ") :]


async def start_job(client: Client, files: list[tuple[str, bytes]], **fields: str) -> dict[str, Any]:
    response = await client.post("/ingest?async=true", data=form(files, **fields))
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def wait_done(client: Client, job_id: str) -> dict[str, Any]:
    for _ in range(500):
        body: dict[str, Any] = await (await client.get(f"/jobs/{job_id}")).json()
        if body["state"] in ("done", "failed", "interrupted"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("job did not finish")


async def test_async_ingest_answers_202_then_the_job_matches_the_synchronous_results(
    client: Client, aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    files = mixed_files()
    accepted = await start_job(client, files, category="holiday")
    job_id = accepted["job"]
    assert accepted == {"job": job_id, "status_url": f"/jobs/{job_id}", "events_url": f"/jobs/{job_id}/events"}

    job = await wait_done(client, job_id)
    reference = await aiohttp_client(create_app(make_settings(tmp_path / "reference")))
    sync = await (await reference.post("/ingest", data=form(files, category="holiday"))).json()

    assert job["state"] == "done"
    assert job["results"] == sync["results"]  # exactly, in the original order
    assert [r["name"] for r in job["results"]] == [name for name, _ in files]
    assert job["counts"] == {
        "total": len(files),
        "done": len(files),
        "stored": sync["stored"],
        "duplicate": sync["duplicates"],
        "failed": sync["failed"],
    }
    assert job["results"][3]["error"]["code"] == "empty_file"
    assert job["results"][0]["category"] == "images/png/holiday"
    assert job["bytes"]["processed"] == sum(len(data) for _, data in files)
    assert job["bytes"]["received"] > job["bytes"]["processed"]  # the multipart framing counts too
    assert job["error"] is None


async def test_events_stream_state_then_a_progress_per_file_then_end(client: Client, data_dir: Path) -> None:
    files = [make_sample("binary", seed) for seed in range(150)]  # several commit chunks
    accepted = await start_job(client, files)
    async with client.get(accepted["events_url"]) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [event async for event in read_events(response)]

    kinds = [kind for kind, _ in events]
    assert kinds[0] == "state"
    assert kinds[-1] == "end"
    assert set(kinds[1:-1]) <= {"progress"}
    first = events[0][1]
    progress = [data for kind, data in events if kind == "progress"]
    # A late watcher sees what was done before it connected in `state`, then one event per remaining file.
    assert first["counts"]["done"] + len(progress) == len(files)
    assert [p["counts"]["done"] for p in progress] == list(range(first["counts"]["done"] + 1, len(files) + 1))
    assert [p["result"]["index"] for p in progress] == list(range(first["counts"]["done"], len(files)))
    end = events[-1][1]
    assert end["state"] == "done"
    assert [r["hash"] for r in end["results"]] == [blake3_hex(data) for _, data in files]
    assert all(blob_files(data_dir)[blake3_hex(data)].read_bytes() == data for _, data in files)
    assert spool_files(data_dir) == []


async def test_a_watcher_arriving_after_the_end_gets_state_and_end(client: Client) -> None:
    accepted = await start_job(client, [make_sample("pdf", 1)])
    await wait_done(client, accepted["job"])
    async with client.get(accepted["events_url"]) as response:
        events = [event async for event in read_events(response)]
    assert [kind for kind, _ in events] == ["state", "end"]
    assert events[0][1]["state"] == "done"
    assert events[1][1]["results"][0]["status"] == "stored"


@pytest.mark.parametrize("path", ["/jobs/0123456789abcdef", "/jobs/0123456789abcdef/events"])
async def test_unknown_job_is_404_job_not_found(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "job_not_found"


async def test_a_refused_async_request_leaves_no_job_and_no_files(client: Client, data_dir: Path) -> None:
    bad = await client.post("/ingest?async=true", data=b"plain", headers={"Content-Type": "text/plain"})
    assert bad.status == 415
    assert (await bad.json())["error"]["code"] == "not_multipart"
    form_without_files = aiohttp.FormData({"comment": "nothing attached"}, default_to_multipart=True)
    empty = await client.post("/ingest?async=true", data=form_without_files)
    assert empty.status == 400
    assert (await empty.json())["error"]["code"] == "no_files"
    with sqlite3.connect(data_dir / "catalog.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM blobs").fetchone() == (0,)
    assert spool_files(data_dir) == []


async def test_finished_jobs_expire_after_the_ttl(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, job_ttl="1")))
    accepted = await start_job(client, [make_sample("gif", 1)])
    assert (await wait_done(client, accepted["job"]))["state"] == "done"
    deadline = time.monotonic() + 10
    status = 200
    while status == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        status = (await client.get(accepted["status_url"])).status
    assert status == 404
    with sqlite3.connect(data_dir / "catalog.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM job_results").fetchone() == (0,)


async def test_finished_jobs_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = [make_sample("png", seed) for seed in range(5)]
    with RhinoBoxProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as session:
            response = await session.post("/ingest?async=true", data=form(files))
            job_id = (await response.json())["job"]
            async with session.get(f"/jobs/{job_id}/events") as events_response:
                ends = [data async for kind, data in read_events(events_response) if kind == "end"]
        assert len(ends) == 1
        end = ends[0]
        assert server.stop() == 0
    with RhinoBoxProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as session:
            after = await (await session.get(f"/jobs/{job_id}")).json()
    assert after["state"] == "done"
    assert after["results"] == end["results"]


def _saved_results(data_dir: Path, job_id: str) -> int:
    db = sqlite3.connect(f"file:{data_dir / 'catalog.sqlite3'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM job_results WHERE job_id = ?", (job_id,)).fetchone()[0])
    finally:
        db.close()


async def test_a_job_killed_midway_reads_interrupted_with_its_committed_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = [(f"f{i:05}.bin", os.urandom(512)) for i in range(2000)]
    with RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="always") as server:
        async with aiohttp.ClientSession(server.url) as session:
            response = await session.post("/ingest?async=true", data=form(files))
            assert response.status == 202
            job_id = (await response.json())["job"]
        deadline = time.monotonic() + 30
        while _saved_results(data_dir, job_id) == 0:  # some files are committed and recorded
            assert time.monotonic() < deadline, "no progress recorded"
            time.sleep(0.002)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    with RhinoBoxProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as session:
            job = await (await session.get(f"/jobs/{job_id}")).json()
            async with session.get(f"/jobs/{job_id}/events") as events_response:
                kinds = [kind async for kind, _ in read_events(events_response)]

    assert job["state"] == "interrupted", job["counts"]
    assert job["error"]["code"] == "interrupted"
    listed = job["results"]
    assert 0 < len(listed) < len(files), len(listed)
    assert job["counts"]["done"] == len(listed)
    assert job["counts"]["total"] == len(files)
    assert [r["index"] for r in listed] == sorted(r["index"] for r in listed)
    for result in listed:  # every listed file really is committed: blob on disk and in the catalog
        name, data = files[result["index"]]
        assert result["name"] == name
        assert result["hash"] == blake3_hex(data)
    committed = catalog_rows(data_dir)
    assert {r["hash"] for r in listed} <= set(committed)
    assert blob_problems(data_dir, [r["hash"] for r in listed]) == []
    assert kinds == ["state", "end"]
    assert spool_files(data_dir) == []


async def test_async_jobs_are_counted_in_metrics(client: Client) -> None:
    files = [make_sample("png", seed) for seed in range(300, 303)]
    accepted = await start_job(client, files)
    await wait_done(client, accepted["job"])
    text = await (await client.get("/metrics")).text()
    stored = [line for line in text.splitlines() if line.startswith("rhinobox_ingest_files_total{")]
    assert any('status="stored"' in line and line.endswith(" 3.0") for line in stored), stored


async def test_closing_the_manager_interrupts_a_running_job_and_keeps_its_results(tmp_path: Path) -> None:
    """Shutdown with a job still running: after the grace period it is cancelled and recorded interrupted."""
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await store.open()
    manager = JobManager(store, ttl=3600, grace=0.2)
    await manager.start()
    job = await manager.create()
    release = asyncio.Event()

    async def work(sink: ResultSink) -> None:
        sink({"index": 0, "name": "a", "status": "stored", "size": 5})
        sink({"index": 1, "name": "b", "status": "error", "size": None})
        await release.wait()  # never set: the job outlives the grace period

    manager.start_job(job, total=3, received_bytes=100, work=work)
    await asyncio.sleep(0.05)
    await manager.close()
    saved = await store.load(job.id)
    await store.close()
    assert saved is not None
    assert saved.state is JobState.INTERRUPTED
    assert saved.error is not None
    assert saved.error.code == "interrupted"
    assert [r["index"] for r in saved.results] == [0, 1]
    assert (saved.total, saved.done, saved.stored, saved.failed, saved.processed_bytes) == (3, 2, 1, 1, 5)


async def test_the_async_flag_is_validated(client: Client, data_dir: Path) -> None:
    refused = await client.post("/ingest?async=maybe", data=form([make_sample("png", 77)]))
    assert refused.status == 400
    assert (await refused.json())["error"]["code"] == "invalid_parameter"
    assert blob_files(data_dir) == {}
    sync = await client.post("/ingest?async=false", data=form([make_sample("png", 77)]))
    assert sync.status == 200
    assert (await sync.json())["results"][0]["status"] == "stored"
