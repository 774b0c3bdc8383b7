"""Two servers on one data directory with a PostgreSQL catalog, as nodes on a shared filesystem run.

Real `rhinobox serve` processes on one host share a temp data directory and a real PostgreSQL database.
What must hold: both start and serve, each spooling in a directory of its own (`instances/<id>/`), gone
after a clean stop; the same new content sent to both at once is stored once; a delete on one racing
an upload on the other never leaves a row without its blob or a blob without its row; a resumable
upload goes on at either; a server killed with SIGKILL restarts, checks what it may not have synced and
removes its own leftovers while its peer serves on, and never touches the peer's live spool or partial
files; a server alone on its directory (SQLite) still refuses a second one, and either kind the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
import blake3
import pytest

from tests.helpers import blob_files, form
from tests.samples import make_sample
from tests.server_process import (
    STREAM_CHUNK,
    RhinoBoxProcess,
    blob_problems,
    generated_bytes,
    generated_digest,
    run_cli,
    server_env,
)

MiB: Final = 1024 * 1024
BOUNDARY: Final = "shared-datadir"
TUS: Final = {"Tus-Resumable": "1.0.0"}
CHUNK_HEADERS: Final = {**TUS, "Content-Type": "application/offset+octet-stream"}
REFUSED: Final = "another RhinoBox process is using the data directory"
WAIT_S: Final = 20.0  # for a spool file to appear, a reconciliation to finish (a loaded 2-core machine)


def shared_env(dsn: str, **env: str) -> dict[str, str]:
    return {"RHINOBOX_CATALOG": dsn, "RHINOBOX_WORKERS": "4", "RHINOBOX_MIN_FREE_MB": "0", **env}


def server(data_dir: Path, name: str, **env: str) -> RhinoBoxProcess:
    """A server on `data_dir` with a log file of its own (two servers share the directory)."""
    process = RhinoBoxProcess(data_dir, **env)
    process.log_path = data_dir.parent / f"{name}-server.log"
    return process


@contextlib.contextmanager
def running(servers: list[RhinoBoxProcess]) -> Iterator[list[RhinoBoxProcess]]:
    """Start `servers` at once (their start-ups take turns on the directory); kill what still runs after."""
    try:
        with ThreadPoolExecutor(len(servers)) as starting:
            list(starting.map(RhinoBoxProcess.start, servers))
        yield servers
    finally:
        for process in servers:
            if process.proc is not None and process.proc.poll() is None:
                process.stop(signal.SIGKILL)


@pytest.fixture
def pair(data_dir: Path, postgres_dsn: str) -> Iterator[list[RhinoBoxProcess]]:
    """Two single-process servers on one data directory and one database."""
    with running([server(data_dir, f"s{i}", **shared_env(postgres_dsn)) for i in range(2)]) as servers:
        yield servers


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


# -- looking at the shared directory and database from outside -------------------------------------


def instance_dirs(data_dir: Path) -> set[Path]:
    base = data_dir / "instances"
    return {path for path in base.iterdir() if path.is_dir()} if base.exists() else set()


def instance_of(data_dir: Path, process: RhinoBoxProcess) -> Path:
    """The instance directory of `process` (its lock file names the server's host and pid)."""
    assert process.proc is not None
    for lock in data_dir.glob("instances/*/lock"):
        _, pid = lock.read_text().split()
        if int(pid) == process.proc.pid:
            return lock.parent
    raise AssertionError(f"no instance directory names pid {process.proc.pid}")


def spool_names(home: Path) -> set[str]:
    return {path.name for path in (home / "tmp").iterdir()}


async def catalog_state(dsn: str) -> tuple[dict[str, int], int]:
    """digest -> size of every blob row, and the number of upload rows, read straight from PostgreSQL."""
    conn = await asyncpg.connect(dsn)
    try:
        blobs = {row["hash"]: row["size"] for row in await conn.fetch("SELECT hash, size FROM blobs")}
        return blobs, int(await conn.fetchval("SELECT count(*) FROM uploads"))
    finally:
        await conn.close()


async def assert_store_exact(data_dir: Path, dsn: str) -> dict[str, int]:
    """Every row has its blob, whole, and every blob its row; returns the rows."""
    catalog, _ = await catalog_state(dsn)
    assert blob_problems(data_dir, catalog) == []
    assert set(blob_files(data_dir)) == set(catalog)
    return catalog


# -- talking to the servers ---------------------------------------------------------------------------


async def post_batch(http: aiohttp.ClientSession, url: str, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    async with http.post(f"{url}/ingest", data=form(files)) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def create_upload(http: aiohttp.ClientSession, url: str, length: int) -> str:
    async with http.post(f"{url}/uploads/", headers={**TUS, "Upload-Length": str(length)}) as created:
        assert created.status == 201, await created.text()
        return created.headers["Location"]


async def append(http: aiohttp.ClientSession, url: str, upload: str, offset: int, data: bytes) -> str | None:
    """PATCH `data` at `offset`; the stored hash once the upload is complete, else None."""
    headers = {**CHUNK_HEADERS, "Upload-Offset": str(offset)}
    async with http.patch(f"{url}{upload}", data=data, headers=headers) as response:
        assert response.status == 204, await response.text()
        result = response.headers.get("RhinoBox-Result")
        return None if result is None else str(json.loads(result)["hash"])


async def download(http: aiohttp.ClientSession, url: str, digest: str) -> bytes:
    async with http.get(f"{url}/files/{digest}") as response:
        assert response.status == 200
        return await response.read()


async def reconciliation(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The server's start-up reconciliation report, once finished (it runs in the background)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        async with http.get(f"{url}/healthz") as response:
            report: dict[str, Any] = (await response.json())["reconcile"]
        if report["state"] not in ("pending", "running") or asyncio.get_running_loop().time() > deadline:
            return report
        await asyncio.sleep(0.05)


class PausedUpload:
    """A multipart upload of one generated file that stops halfway until `finish`: its spool file stays live."""

    def __init__(self, http: aiohttp.ClientSession, url: str, seed: int, size: int) -> None:
        self.seed = seed
        self.size = size
        self._go = asyncio.Event()
        self._halfway = asyncio.Event()
        self.task = asyncio.ensure_future(self._send(http, url))

    async def _body(self) -> AsyncIterator[bytes]:
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="paused-{self.seed}.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for offset in range(0, self.size, STREAM_CHUNK):
            if offset >= self.size // 2 and not self._go.is_set():
                self._halfway.set()
                await self._go.wait()
            yield generated_bytes(self.seed, self.size, offset, STREAM_CHUNK)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    async def _send(self, http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        async with http.post(f"{url}/ingest", data=self._body(), headers=headers) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = (await response.json())["results"][0]
            return body

    async def spooling(self, home: Path) -> None:
        """Wait until half the file is sent and the server's spool directory holds its bytes."""
        await asyncio.wait_for(self._halfway.wait(), WAIT_S)
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not any(path.stat().st_size > 0 for path in (home / "tmp").iterdir()):
            assert asyncio.get_running_loop().time() < deadline, f"nothing spooled in {home}"
            await asyncio.sleep(0.02)

    async def finish(self) -> dict[str, Any]:
        """Send the rest; the file's result."""
        self._go.set()
        return await asyncio.wait_for(self.task, WAIT_S)


# -- the tests ------------------------------------------------------------------------------------------


async def test_two_servers_share_the_directory_each_spooling_apart(
    pair: list[RhinoBoxProcess], data_dir: Path, http: aiohttp.ClientSession
) -> None:
    first, second = pair
    homes = instance_dirs(data_dir)
    assert homes == {instance_of(data_dir, first), instance_of(data_dir, second)}
    assert len(homes) == 2
    for home in homes:
        assert (home / "tmp").is_dir()
        assert (home / "rhinobox.running").exists()
    assert not (data_dir / "tmp").exists(), "a sharing server spooled in the shared directory"
    name, payload = make_sample("png", 1)
    digest = (await post_batch(http, first.url, [(name, payload)]))["results"][0]["hash"]
    assert await download(http, second.url, digest) == payload
    assert [process.stop() for process in pair] == [0, 0]
    assert instance_dirs(data_dir) == set(), "a clean stop removes the server's directory"
    assert sorted(path.name for path in (data_dir / "instances").iterdir()) == ["startup.lock"]
    assert not (data_dir / "rhinobox.running").exists()


async def test_the_same_new_content_at_both_at_once_is_stored_once(
    data_dir: Path, postgres_dsn: str, http: aiohttp.ClientSession
) -> None:
    """With two serving processes each (the supervisor's path): 2 x 2 processes on one directory."""
    env = shared_env(postgres_dsn, RHINOBOX_PROCESSES="2")
    with running([server(data_dir, f"s{i}", **env) for i in range(2)]) as (first, second):
        for round_number in range(4):
            files = [make_sample("jpeg", 1000 * round_number + i) for i in range(20)]
            files.append((f"big{round_number}.bin", os.urandom(2 * MiB + round_number)))  # spooled, not in an arena
            one, other = await asyncio.gather(post_batch(http, first.url, files), post_batch(http, second.url, files))
            for a, b in zip(one["results"], other["results"], strict=True):
                assert a["hash"] == b["hash"]
                assert sorted([a["status"], b["status"]]) == ["duplicate", "stored"], (a, b)
        catalog, uploads = await catalog_state(postgres_dsn)
        assert (len(catalog), uploads) == (4 * 21, 2 * 4 * 21)  # one blob, two upload rows each
        await assert_store_exact(data_dir, postgres_dsn)
        for home in instance_dirs(data_dir):
            assert spool_names(home) == set()


async def test_a_delete_on_one_racing_an_upload_on_the_other_stays_exact(
    pair: list[RhinoBoxProcess], data_dir: Path, postgres_dsn: str, http: aiohttp.ClientSession
) -> None:
    uploader, deleter = pair
    outcomes: set[tuple[int, str]] = set()
    for round_number in range(16):
        # Alternately a small file (hashed in an arena) and a large one (streamed through a spool file).
        payload = make_sample("png", round_number % 3)[1] if round_number % 2 else b"L" * (400_000 + round_number % 3)
        digest = blake3.blake3(payload).hexdigest()

        async def delete(digest: str = digest) -> int:
            async with http.delete(f"{deleter.url}/files/{digest}") as response:
                return response.status

        body, deleted = await asyncio.gather(post_batch(http, uploader.url, [("raced.bin", payload)]), delete())
        outcomes.add((deleted, body["results"][0]["status"]))
        catalog, _ = await catalog_state(postgres_dsn)
        on_disk = blob_files(data_dir)
        # Whichever won, a row has its blob and a blob its row.
        assert (digest in catalog) == (digest in on_disk), (round_number, deleted, body)
        assert blob_problems(data_dir, catalog) == []
    assert {status for status, _ in outcomes} <= {204, 404}
    assert {status for _, status in outcomes} <= {"stored", "duplicate"}


async def test_a_resumable_upload_started_on_one_finishes_on_the_other(
    pair: list[RhinoBoxProcess], data_dir: Path, postgres_dsn: str, http: aiohttp.ClientSession
) -> None:
    first, second = pair
    payload = os.urandom(3 * MiB + 7)
    third = len(payload) // 3
    upload = await create_upload(http, first.url, len(payload))
    assert await append(http, first.url, upload, 0, payload[:third]) is None
    async with http.head(f"{second.url}{upload}", headers=TUS) as head:
        assert head.headers["Upload-Offset"] == str(third)
    assert await append(http, second.url, upload, third, payload[third : 2 * third]) is None
    digest = await append(http, first.url, upload, 2 * third, payload[2 * third :])
    assert digest == blake3.blake3(payload).hexdigest()
    assert await download(http, second.url, digest) == payload
    assert set(await assert_store_exact(data_dir, postgres_dsn)) == {digest}


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_a_killed_server_restarts_without_touching_its_live_peer(
    processes: str, data_dir: Path, postgres_dsn: str, http: aiohttp.ClientSession
) -> None:
    """With two serving processes, the killed supervisor's processes die after it, and the restart waits for them."""
    env = shared_env(postgres_dsn, RHINOBOX_PROCESSES=processes)
    with running([server(data_dir, f"s{i}", **env) for i in range(2)]) as pair:
        await _kill_and_restart(pair, data_dir, postgres_dsn, http)


async def _kill_and_restart(
    pair: list[RhinoBoxProcess], data_dir: Path, postgres_dsn: str, http: aiohttp.ClientSession
) -> None:
    victim, peer = pair
    victim_home, peer_home = instance_of(data_dir, victim), instance_of(data_dir, peer)
    # The peer's live work: half of a resumable upload, and a multipart upload paused mid-file.
    payload = os.urandom(4 * MiB + 3)
    half = len(payload) // 2
    upload = await create_upload(http, peer.url, len(payload))
    assert await append(http, peer.url, upload, 0, payload[:half]) is None
    part = data_dir / "uploads" / f"{upload.rstrip('/').rsplit('/', 1)[-1]}.part"
    assert part.stat().st_size == half
    live = PausedUpload(http, peer.url, seed=1, size=8 * MiB)
    doomed = PausedUpload(http, victim.url, seed=2, size=8 * MiB)
    await live.spooling(peer_home)
    await doomed.spooling(victim_home)
    peer_spool = spool_names(peer_home)

    victim.kill()
    with pytest.raises((aiohttp.ClientError, ConnectionError)):
        await doomed.finish()
    assert (victim_home / "rhinobox.running").exists()
    assert spool_names(victim_home) != set()

    # The peer serves on while the victim starts again and adopts what its dead run left.
    restart = asyncio.ensure_future(asyncio.to_thread(victim.start))
    during = await post_batch(http, peer.url, [make_sample("gif", i) for i in range(10)])
    assert during["failed"] == 0
    await restart
    assert not victim_home.exists(), "the dead run's directory was not adopted"
    assert instance_dirs(data_dir) == {peer_home, instance_of(data_dir, victim)}
    assert spool_names(peer_home) == peer_spool, "the restart touched the live peer's spool files"
    assert part.stat().st_size == half, "the restart touched the live peer's partial upload"
    report = await reconciliation(http, victim.url)
    assert report["unclean_stop"] is True  # the dead run's window was checked before serving
    assert report["stale_spool_files"] >= 1  # the dead run's spool file
    assert (report["state"], report["orphan_blobs"], report["missing_blobs"], report["torn_blobs"]) == ("done", 0, 0, 0)

    # Both of the peer's uploads finish whole: the paused one there, the resumable one on the restarted server.
    result = await live.finish()
    assert (result["status"], result["hash"]) == ("stored", generated_digest(1, 8 * MiB))
    digest = await append(http, victim.url, upload, half, payload[half:])
    assert digest == blake3.blake3(payload).hexdigest()
    assert await download(http, victim.url, digest) == payload
    assert await download(http, victim.url, result["hash"]) == generated_bytes(1, 8 * MiB)
    catalog = await assert_store_exact(data_dir, postgres_dsn)
    assert generated_digest(2, 8 * MiB) not in catalog  # the killed server's upload left nothing
    assert [process.stop() for process in pair] == [0, 0]
    assert instance_dirs(data_dir) == set()


@pytest.mark.parametrize(
    ("first", "second"), [("sqlite", "sqlite"), ("sqlite", "postgresql"), ("postgresql", "sqlite")]
)
def test_a_server_alone_on_its_directory_refuses_any_other(
    first: str, second: str, data_dir: Path, postgres_dsn: str
) -> None:
    """SQLite keeps the directory to itself; a sharing server neither starts beside it nor lets it start."""
    catalogs = {"sqlite": "", "postgresql": postgres_dsn}
    with running([server(data_dir, "first", RHINOBOX_CATALOG=catalogs[first])]) as (running_server,):
        env = server_env(data_dir, RHINOBOX_CATALOG=catalogs[second], RHINOBOX_LOG_LEVEL="error")
        result = run_cli("serve", env=env)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert REFUSED in lines[0]
        assert running_server.proc is not None
        assert running_server.proc.poll() is None
        assert running_server.stop() == 0
    assert not (data_dir / "rhinobox.running").exists()


async def test_a_sharing_server_adopts_what_a_crashed_server_alone_on_the_directory_left(
    data_dir: Path, postgres_dsn: str, http: aiohttp.ClientSession
) -> None:
    """The flat layout (an earlier version's, or a server alone on the directory) crashed: its spool file,
    group state and run marker. The first sharing server checks its window and removes them."""
    (data_dir / "tmp").mkdir(parents=True)
    (data_dir / "tmp" / "0-dead-0.spool").write_bytes(b"half an upload")
    (data_dir / "group" / "metrics").mkdir(parents=True)
    (data_dir / "rhinobox.running").touch()
    with running([server(data_dir, "s0", **shared_env(postgres_dsn))]) as (sharing,):
        report = await reconciliation(http, sharing.url)
        assert (report["unclean_stop"], report["stale_spool_files"], report["state"]) == (True, 1, "done")
        assert list((data_dir / "tmp").iterdir()) == []
        assert not (data_dir / "group").exists()
        assert not (data_dir / "rhinobox.running").exists()
        assert instance_dirs(data_dir) == {instance_of(data_dir, sharing)}
