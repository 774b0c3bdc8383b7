"""Nodes sharing one PostgreSQL catalog share their state too: category rules and async jobs.

Two apps run in-process on one real PostgreSQL database (each with its own local blob store), as two
RhinoBox nodes behind a balancer would; the crash case kills a real server process.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from rhinobox.app import create_app
from rhinobox.ingest.rules_store import RULES_POLL_INTERVAL
from rhinobox.jobs import Job, JobError, JobManager, JobState
from rhinobox.jobs.manager import HEARTBEAT_INTERVAL, LEASE_HEARTBEATS, ResultSink
from rhinobox.jobs.postgres import PostgresJobStore
from tests.helpers import (
    AiohttpClient,
    Client,
    assert_error,
    form,
    ingest_one,
    job_of,
    make_settings,
    read_events,
    start_job,
    wait_done,
)
from tests.samples import make_sample
from tests.server_process import RhinoBoxProcess

PROPAGATION_S = 10 * RULES_POLL_INTERVAL  # "within a few seconds", with room for a loaded machine
LEASE_S = HEARTBEAT_INTERVAL * LEASE_HEARTBEATS
SHORT_HEARTBEAT_S = 0.2
SHORT_LEASE_S = SHORT_HEARTBEAT_S * LEASE_HEARTBEATS
LEASE_LOST = JobError("interrupted", "lease ran out")
PHOTO_RULES = {"mime": {"image/*": "photos/{subtype}"}, "default": "misc/{subtype}"}


async def node(aiohttp_client: AiohttpClient, data_dir: Path, dsn: str) -> Client:
    return await aiohttp_client(create_app(make_settings(data_dir, catalog=dsn)))


@pytest.fixture
async def node_a(aiohttp_client: AiohttpClient, tmp_path: Path, postgres_dsn: str) -> Client:
    return await node(aiohttp_client, tmp_path / "a", postgres_dsn)


@pytest.fixture
async def node_b(aiohttp_client: AiohttpClient, tmp_path: Path, postgres_dsn: str, node_a: Client) -> Client:
    return await node(aiohttp_client, tmp_path / "b", postgres_dsn)


class CatalogWritesHeld:
    """Holds an exclusive lock on the catalog's `uploads` table: ingest commits wait until `release`.

    A real database lock, so a job stays midway (received, nothing recorded) for as long as a test needs.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> CatalogWritesHeld:
        self._conn = await asyncpg.connect(self.dsn)
        await self._conn.execute("BEGIN; LOCK TABLE uploads IN EXCLUSIVE MODE")
        return self

    async def release(self) -> None:
        if self._conn is not None:
            await self._conn.execute("ROLLBACK")
            await self._conn.close()
            self._conn = None

    async def __aexit__(self, *_: object) -> None:
        await self.release()


async def category_of_upload(client: Client, kind: str, seed: int) -> str:
    return str((await ingest_one(client, *make_sample(kind, seed)))["category"])


async def rules_of(client: Client) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get("/categories")).json()
    return body


async def until_rules(client: Client, rules: dict[str, Any]) -> None:
    """Wait (a bounded time) until `client`'s node has `rules` in force."""
    deadline = time.monotonic() + PROPAGATION_S
    while (await rules_of(client))["mime"] != rules["mime"]:
        assert time.monotonic() < deadline, "the node never picked up the new rules"
        await asyncio.sleep(0.1)


async def stored_rules_version(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SELECT version FROM category_rules WHERE id = 1")
    finally:
        await conn.close()
    return None if version is None else int(version)


# -- category rules ----------------------------------------------------------------------------


async def test_a_rules_change_on_one_node_reaches_the_other(node_a: Client, node_b: Client) -> None:
    assert await category_of_upload(node_b, "gif", 1) == "images/gif"
    response = await node_a.put("/categories", json=PHOTO_RULES)
    assert response.status == 200
    assert await category_of_upload(node_a, "gif", 2) == "photos/gif"  # the node that took the PUT: at once

    await until_rules(node_b, PHOTO_RULES)
    assert await category_of_upload(node_b, "gif", 3) == "photos/gif"
    assert await category_of_upload(node_b, "pdf", 3) == "misc/pdf"
    assert await rules_of(node_b) == await rules_of(node_a)


async def test_a_bad_rule_set_is_refused_and_every_node_keeps_the_old(
    node_a: Client, node_b: Client, postgres_dsn: str
) -> None:
    assert (await node_a.put("/categories", json=PHOTO_RULES)).status == 200
    version = await stored_rules_version(postgres_dsn)
    assert version == 1
    await until_rules(node_b, PHOTO_RULES)
    bad = {"mime": {"image/*": "Not A Category"}}
    await assert_error(await node_a.put("/categories", json=bad), 400, "invalid_rules")
    assert await stored_rules_version(postgres_dsn) == version  # nothing was saved

    # A rule document that does not parse (written past the API) is not applied either.
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("UPDATE category_rules SET version = version + 1, document = '{\"mime\": 7}'")
    finally:
        await conn.close()
    await asyncio.sleep(RULES_POLL_INTERVAL * 2)
    for client in (node_a, node_b):
        assert (await rules_of(client))["mime"] == PHOTO_RULES["mime"]
        assert await category_of_upload(client, "gif", 4) == "photos/gif"


async def test_rules_saved_in_the_database_apply_to_a_node_started_later(
    aiohttp_client: AiohttpClient, tmp_path: Path, node_a: Client, postgres_dsn: str
) -> None:
    assert (await node_a.put("/categories", json=PHOTO_RULES)).status == 200
    late = await node(aiohttp_client, tmp_path / "late", postgres_dsn)
    assert await category_of_upload(late, "png", 5) == "photos/png"
    assert not (tmp_path / "a" / "categories.json").exists()  # in the database, not a node's data dir


# -- async jobs --------------------------------------------------------------------------------


def png_files(count: int, first_seed: int) -> list[tuple[str, bytes]]:
    return [(f"p{i:03}.png", make_sample("png", first_seed + i)[1]) for i in range(count)]


async def test_a_job_started_on_one_node_is_followed_on_the_other(
    node_a: Client, node_b: Client, postgres_dsn: str
) -> None:
    files = png_files(40, 100)
    async with CatalogWritesHeld(postgres_dsn) as held:
        job_id = (await start_job(node_a, files))["job"]
        running = await job_of(node_b, job_id)
        assert running["state"] in ("queued", "running")
        assert running["results"] is None
        async with node_b.get(f"/jobs/{job_id}/events") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            events = read_events(stream)
            kind, first = await anext(events)
            assert (kind, first["counts"]["done"], first["counts"]["total"]) == ("state", 0, len(files))
            await held.release()
            rest = [event async for event in events]

    kinds = [kind for kind, _ in rest]
    assert kinds == ["progress"] * len(files) + ["end"]
    progress = [data for kind, data in rest if kind == "progress"]
    assert [p["counts"]["done"] for p in progress] == list(range(1, len(files) + 1))
    assert sorted(p["result"]["index"] for p in progress) == list(range(len(files)))
    end = rest[-1][1]
    assert end["state"] == "done"
    assert [r["name"] for r in end["results"]] == [name for name, _ in files]
    assert all(r["status"] == "stored" for r in end["results"])

    on_a, on_b = await job_of(node_a, job_id), await job_of(node_b, job_id)
    assert on_a == on_b == end


async def test_a_live_job_is_not_interrupted_when_another_node_restarts(
    aiohttp_client: AiohttpClient, tmp_path: Path, node_a: Client, postgres_dsn: str
) -> None:
    files = png_files(10, 200)
    async with CatalogWritesHeld(postgres_dsn) as held:
        job_id = (await start_job(node_a, files))["job"]
        first_b = await node(aiohttp_client, tmp_path / "b", postgres_dsn)
        await first_b.close()
        await node(aiohttp_client, tmp_path / "b", postgres_dsn)  # B again: its start-up sweep runs
        await asyncio.sleep(LEASE_S + HEARTBEAT_INTERVAL)  # past a lease: A's heartbeats keep the job
        restarted = await node(aiohttp_client, tmp_path / "c", postgres_dsn)
        assert (await job_of(restarted, job_id))["state"] == "running"
        await held.release()
    done = await wait_done(restarted, job_id)
    assert done["state"] == "done"
    assert done["error"] is None
    assert len(done["results"]) == len(files)


async def test_a_job_whose_node_died_is_reported_interrupted(tmp_path: Path, node_b: Client, postgres_dsn: str) -> None:
    files = [(f"f{i:03}.bin", os.urandom(256)) for i in range(20)]
    with RhinoBoxProcess(tmp_path / "dying", RHINOBOX_CATALOG=postgres_dsn) as server:
        async with CatalogWritesHeld(postgres_dsn) as held, aiohttp.ClientSession(server.url) as session:
            response = await session.post("/ingest?async=true", data=form(files))
            assert response.status == 202
            job_id = (await response.json())["job"]
            assert (await job_of(node_b, job_id))["state"] in ("queued", "running")
            async with node_b.get(f"/jobs/{job_id}/events") as stream:
                events = read_events(stream)
                assert (await anext(events))[0] == "state"
                server.kill()  # SIGKILL mid-job: no goodbye, no final write
                await held.release()
                rest = [event async for event in events]  # until `end`, once B takes A for dead

    assert [kind for kind, _ in rest] == ["end"]
    end = rest[-1][1]
    assert end["state"] == "interrupted"
    assert end["error"]["code"] == "interrupted"
    assert end["results"] == []
    assert (await job_of(node_b, job_id))["state"] == "interrupted"


@pytest.fixture
async def two_stores(postgres_dsn: str) -> AsyncIterator[tuple[PostgresJobStore, PostgresJobStore]]:
    a, b = PostgresJobStore(postgres_dsn, "node-a"), PostgresJobStore(postgres_dsn, "node-b")
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_only_jobs_whose_lease_ran_out_are_interrupted(
    two_stores: tuple[PostgresJobStore, PostgresJobStore],
) -> None:
    a, b = two_stores
    manager = JobManager(a, ttl=3600, grace=0.1, heartbeat=SHORT_HEARTBEAT_S)
    await manager.start()
    release = asyncio.Event()

    async def work(sink: ResultSink) -> None:
        sink({"index": 0, "name": "x", "status": "stored", "size": 3})
        await release.wait()

    live = await manager.create()
    manager.start_job(live, total=2, received_bytes=10, work=work)
    orphan = Job(id="orphan", state=JobState.RUNNING, created_at=time.time(), updated_at=time.time(), total=1)
    await a.save(orphan, [])  # leased once, never renewed: its node "died"
    await asyncio.sleep(SHORT_LEASE_S * 2)

    # Whichever node looks first takes the orphan (A's own renewal may already have); never the live job.
    await b.interrupt_unfinished(time.time(), LEASE_LOST, lease=SHORT_LEASE_S)
    seen, gone = await b.load(live.id), await b.load("orphan")
    assert seen is not None
    assert gone is not None
    assert (seen.state, [r["index"] for r in seen.results]) == (JobState.RUNNING, [0])
    assert gone.state is JobState.INTERRUPTED
    assert gone.error is not None
    assert gone.error.code == "interrupted"
    await a.save(orphan, [{"index": 0, "name": "late", "status": "stored", "size": 1}])  # a late write
    late = await b.load("orphan")
    assert late is not None
    assert (late.state, late.results) == (JobState.INTERRUPTED, [])  # stays interrupted, unchanged

    release.set()
    await manager.close()
    final = await b.load(live.id)
    assert final is not None
    assert (final.state, final.done, final.stored) == (JobState.DONE, 1, 1)
