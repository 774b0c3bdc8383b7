"""Async ingest jobs: 202 + job, progress over Server-Sent Events, results in order, restarts, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rhinobox.app import create_app
from rhinobox.errors import Overloaded
from rhinobox.http.keys import JOBS
from rhinobox.jobs import FileResult, Job, JobEvent, JobManager, JobState, SQLiteJobStore
from rhinobox.jobs.manager import (
    FINAL_SAVE_ATTEMPTS,
    WATCHER_QUEUE_MAX,
    WATCHERS_PER_JOB_MAX,
    WATCHERS_TOTAL_MAX,
    ResultSink,
)
from tests.helpers import (
    AiohttpClient,
    Client,
    assert_error,
    blake3_hex,
    blob_files,
    form,
    make_settings,
    read_events,
    spool_files,
    start_job,
    wait_done,
    wait_until,
)
from tests.samples import SAMPLES, make_sample
from tests.server_process import RhinoBoxProcess, blob_problems, catalog_rows


def mixed_files() -> list[tuple[str, bytes]]:
    """Every sample kind, a file large enough to spool, an empty file, and content repeated in-batch."""
    files = [make_sample(kind, seed) for seed, kind in enumerate(SAMPLES)]
    files.append(("big.bin", os.urandom(300 * 1024)))
    files.insert(3, ("empty.txt", b""))
    files.append(("again.png", files[0][1]))
    return files


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
    await assert_error(await client.get(path), 404, "job_not_found")


async def test_a_refused_async_request_leaves_no_job_and_no_files(client: Client, data_dir: Path) -> None:
    bad = await client.post("/ingest?async=true", data=b"plain", headers={"Content-Type": "text/plain"})
    await assert_error(bad, 415, "not_multipart")
    form_without_files = aiohttp.FormData({"comment": "nothing attached"}, default_to_multipart=True)
    empty = await client.post("/ingest?async=true", data=form_without_files)
    await assert_error(empty, 400, "no_files")
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
    await assert_error(refused, 400, "invalid_parameter")
    assert blob_files(data_dir) == {}
    sync = await client.post("/ingest?async=false", data=form([make_sample("png", 77)]))
    assert sync.status == 200
    assert (await sync.json())["results"][0]["status"] == "stored"


# -- watchers: shared frames, caps, bounded queues, exception-safe registration -----------------------


async def blocked_job(manager: JobManager, results: int = 0) -> tuple[str, asyncio.Event]:
    """A job on `manager` that reports `results` files, then runs until the returned event is set."""
    job = await manager.create()
    release = asyncio.Event()

    async def work(sink: ResultSink) -> None:
        for index in range(results):
            sink({"index": index, "name": f"f{index}", "status": "stored", "size": 1})
        await release.wait()

    manager.start_job(job, total=results + 1, received_bytes=10, work=work)
    await asyncio.sleep(0)  # the job is running
    return job.id, release


async def open_manager(tmp_path: Path, store: SQLiteJobStore | None = None, **kwargs: Any) -> JobManager:
    store = store or SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await store.open()
    manager = JobManager(store, ttl=3600, grace=kwargs.pop("grace", 1.0), **kwargs)
    await manager.start()
    return manager


async def test_every_watcher_gets_the_same_event_serialized_once(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    manager = await open_manager(tmp_path, store)
    job_id, release = await blocked_job(manager)
    streams = [await manager.events(job_id, 60) for _ in range(3)]
    assert all(stream is not None for stream in streams)
    for stream in streams:
        assert stream is not None
        assert (await anext(stream)) is not None  # state
    release.set()
    ends = []
    for stream in streams:
        assert stream is not None
        ends.append(await anext(stream))
        await stream.aclose()
    assert all(end is not None and end.kind == "end" for end in ends)
    assert ends[0] is ends[1] is ends[2]  # one event object for every watcher
    first = ends[0]
    assert first is not None
    assert first.frame() is first.frame()  # serialized once, then shared
    assert first.frame().startswith(b"event: end\ndata: {")
    await manager.close()
    await store.close()


async def test_watchers_past_the_per_job_cap_are_refused_503_until_one_leaves(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path / "data")))
    manager = client.app[JOBS]
    job_id, release = await blocked_job(manager)
    open_streams = []
    for _ in range(WATCHERS_PER_JOB_MAX):
        response = await client.get(f"/jobs/{job_id}/events")
        assert response.status == 200
        assert (await response.content.readuntil(b"\n\n")).startswith(b"id: 1\nevent: state\n")
        open_streams.append(response)
    refused = await client.get(f"/jobs/{job_id}/events")
    await assert_error(refused, 503, "overloaded")
    assert refused.headers["Retry-After"] == "1"
    assert manager.watchers_of(job_id) == WATCHERS_PER_JOB_MAX

    open_streams.pop().close()
    await wait_until(lambda: manager.watchers_of(job_id) < WATCHERS_PER_JOB_MAX, 1.0)
    again = await client.get(f"/jobs/{job_id}/events")
    assert again.status == 200
    release.set()
    for response in [*open_streams, again]:
        events = [kind async for kind, _ in read_events(response)]
        assert events[-1] == "end"
    assert manager.watchers == 0


async def test_watchers_past_the_total_cap_are_refused(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    manager = await open_manager(tmp_path, store)
    jobs = [await blocked_job(manager) for _ in range(-(-WATCHERS_TOTAL_MAX // WATCHERS_PER_JOB_MAX) + 1)]
    streams = []
    for index in range(WATCHERS_TOTAL_MAX):
        stream = await manager.events(jobs[index // WATCHERS_PER_JOB_MAX][0], 60)
        assert stream is not None
        streams.append(stream)
    try:
        with pytest.raises(Overloaded):
            await manager.events(jobs[-1][0], 60)  # a job with no watcher yet: the total is what is full
    finally:
        for _, release in jobs:
            release.set()
    await streams.pop().aclose()
    last = await manager.events(jobs[-1][0], 60)
    assert last is not None
    for stream in [*streams, last]:
        await stream.aclose()
    assert manager.watchers == 0
    await manager.close()
    await store.close()


async def _collect(stream: AsyncIterator[JobEvent | None]) -> list[JobEvent | None]:
    return [event async for event in stream]


async def test_a_watcher_that_falls_too_far_behind_is_cut_off_and_can_reconnect(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    manager = await open_manager(tmp_path, store)
    job = await manager.create()
    release = asyncio.Event()
    sinks: list[ResultSink] = []

    async def work(sink: ResultSink) -> None:
        sinks.append(sink)
        await release.wait()

    manager.start_job(job, total=WATCHER_QUEUE_MAX + 20, received_bytes=10, work=work)
    await asyncio.sleep(0)
    slow = await manager.events(job.id, 60)  # subscribed, but reads nothing while the job runs on
    assert slow is not None
    for index in range(WATCHER_QUEUE_MAX + 10):
        sinks[0]({"index": index, "name": f"f{index}", "status": "stored", "size": 1})
    received = await asyncio.wait_for(_collect(slow), 5)  # its state, then the stream just ends
    assert [event.kind for event in received if event is not None] == ["state"]
    await slow.aclose()
    assert manager.watchers == 0

    again = await manager.events(job.id, 60)  # reconnecting starts from the current state
    assert again is not None
    state = await anext(again)
    assert state is not None
    assert state.kind == "state"
    assert state.data["counts"]["done"] == WATCHER_QUEUE_MAX + 10
    release.set()
    kinds = [event.kind async for event in again if event is not None]
    assert kinds == ["end"]
    await again.aclose()
    await manager.close()
    await store.close()


async def test_a_stream_that_fails_before_it_starts_gives_its_place_back(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """`response.prepare` raising (here from an on_response_prepare hook) must not leave a watcher behind."""
    app = create_app(make_settings(tmp_path / "data"))

    async def refuse_event_streams(request: web.Request, response: web.StreamResponse) -> None:
        if response.content_type == "text/event-stream":
            raise ConnectionResetError("the client went away while the headers were sent")

    app.on_response_prepare.append(refuse_event_streams)
    client = await aiohttp_client(app)
    manager = client.app[JOBS]
    job_id, release = await blocked_job(manager)
    for _ in range(3):
        with contextlib.suppress(aiohttp.ClientError):
            await client.get(f"/jobs/{job_id}/events")
    release.set()
    assert manager.watchers_of(job_id) == 0


# -- recording the end: store failures and cancels while finishing -------------------------------------


class FlakyStore(SQLiteJobStore):
    """A real SQLite job store whose saves of a job's end fail `failures` times, or block once."""

    def __init__(self, path: Path, failures: int = 0, block: bool = False) -> None:
        super().__init__(path)
        self.failures = failures
        self.block = block
        self.blocked = asyncio.Event()

    async def save(self, job: Job, new_results: Sequence[FileResult]) -> None:
        if job.final and self.block:
            self.block = False
            self.blocked.set()
            await asyncio.Event().wait()  # hangs until cancelled
        if job.final and self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        await super().save(job, new_results)


async def one_file_job(manager: JobManager) -> str:
    job = await manager.create()

    async def work(sink: ResultSink) -> None:
        sink({"index": 0, "name": "a", "status": "stored", "size": 5})

    manager.start_job(job, total=1, received_bytes=10, work=work)
    return job.id


async def wait_stored_state(store: SQLiteJobStore, job_id: str, seconds: float = 5.0) -> JobState | None:
    for _ in range(int(seconds / 0.02)):
        saved = await store.load(job_id, results=False)
        if saved is not None and saved.final:
            return saved.state
        await asyncio.sleep(0.02)
    saved = await store.load(job_id, results=False)
    return None if saved is None else saved.state


async def test_a_failed_final_save_is_retried(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "jobs.sqlite3", failures=1)
    manager = await open_manager(tmp_path, store)
    job_id = await one_file_job(manager)
    assert await wait_stored_state(store, job_id) is JobState.DONE
    saved = await store.load(job_id)
    assert saved is not None
    assert [r["index"] for r in saved.results] == [0]
    await manager.close()
    await store.close()


async def test_an_end_the_store_refused_is_kept_in_memory_and_recorded_at_the_next_heartbeat(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "jobs.sqlite3", failures=FINAL_SAVE_ATTEMPTS)
    manager = await open_manager(tmp_path, store, heartbeat=0.1)
    job_id = await one_file_job(manager)
    for _ in range(200):
        if store.failures == 0:
            break
        await asyncio.sleep(0.02)
    assert store.failures == 0  # every attempt of the job's own end failed
    job = await manager.get(job_id)
    assert job is not None
    assert job.state is JobState.DONE  # served from memory meanwhile, never `running`
    assert await wait_stored_state(store, job_id) is JobState.DONE  # recorded by a later heartbeat
    await manager.close()
    await store.close()


async def test_an_end_the_store_refused_until_shutdown_is_recorded_at_shutdown(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "jobs.sqlite3", failures=FINAL_SAVE_ATTEMPTS)
    manager = await open_manager(tmp_path, store, heartbeat=3600)  # no tick before the shutdown
    job_id = await one_file_job(manager)
    for _ in range(200):
        if store.failures == 0:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    stored = await store.load(job_id, results=False)
    assert stored is not None
    assert not stored.final  # the store still has it unfinished; only this process knows the end
    await manager.close()
    assert await wait_stored_state(store, job_id, 0) is JobState.DONE
    await store.close()


async def test_a_cancel_while_the_end_is_being_recorded_still_records_it(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "jobs.sqlite3", block=True)
    manager = await open_manager(tmp_path, store, grace=0.1, heartbeat=3600)
    job_id = await one_file_job(manager)
    await asyncio.wait_for(store.blocked.wait(), 5)  # the job is finishing: its final save hangs
    await manager.close()  # the grace runs out: the cancel lands in the final save
    saved = await store.load(job_id)
    await store.close()
    assert saved is not None
    assert saved.state is JobState.DONE
    assert [r["index"] for r in saved.results] == [0]
