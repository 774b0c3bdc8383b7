"""Several serving processes on one data directory (`RHINOBOX_PROCESSES=2`), through the real server.

Each serving process accepts from the one listening socket, so a test picks which process serves a
connection by stopping (SIGSTOP) the other while the connection is opened and accepted; the kept-alive
connection then stays with the process that accepted it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import aiohttp

from rhinobox.ingest.rules_store import FileRulesStore
from rhinobox.runmarker import RUN_MARKER_FILENAME
from rhinobox.settings import usable_cores
from tests.helpers import blake3_hex, form, png, read_events, spool_files, wait_until
from tests.server_process import RhinoBoxProcess, blob_problems, catalog_rows, run_cli

PROCESSES: Final = 2
WAIT_S: Final = 20.0  # bound on waiting for a restart, a drain or a rules change: a hang fails the test
RULES_BOUND_S: Final = 2.0 + 1.0  # the documented poll interval, plus slack for this shared machine
SPOOLED_SIZE: Final = 2 * 1024 * 1024  # above the in-memory arena limit: received into a spool file


def group(data_dir: Path, **env: str) -> RhinoBoxProcess:
    return RhinoBoxProcess(data_dir, RHINOBOX_PROCESSES=str(PROCESSES), **env)


def members(server: RhinoBoxProcess) -> list[int]:
    """The serving processes' pids (the supervisor's children)."""
    assert server.proc is not None
    pid = server.proc.pid
    return sorted(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


@contextmanager
def only(server: RhinoBoxProcess, member: int) -> Iterator[None]:
    """While inside, every other serving process is stopped: new connections go to `member`."""
    others = [pid for pid in members(server) if pid != member]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


@asynccontextmanager
async def session_on(server: RhinoBoxProcess, member: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A session with one kept-alive connection, accepted by `member`."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        with only(server, member):
            async with session.get(server.url + "/healthz") as response:
                assert response.status == 200
                await response.read()
        yield session


async def ingest(session: aiohttp.ClientSession, url: str, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    async with session.post(url + "/ingest", data=form(files)) as response:
        assert response.status == 200, await response.text()
        results: list[dict[str, Any]] = (await response.json())["results"]
    return results


def store_is_consistent(data_dir: Path, *, after_crash: bool = False) -> None:
    """`rhinobox verify` finds nothing wrong, and every catalog row has an intact blob.

    `after_crash`: a blob renamed in just before kill -9, whose row was never written (so never
    answered), may remain as an orphan: reported, not repaired, re-claimed by its next upload.
    """
    result = run_cli("verify", env={**os.environ, "RHINOBOX_DATA_DIR": str(data_dir), "NO_COLOR": "1"})
    output = result.stdout + result.stderr
    if after_crash and result.returncode != 0:
        problems = [line for line in output.splitlines() if re.match(r"(orphan|corrupt|missing) ", line)]
        assert problems, output
        assert all(line.startswith("orphan ") for line in problems), output
    else:
        assert result.returncode == 0, output
    assert blob_problems(data_dir, catalog_rows(data_dir)) == []


async def test_a_killed_serving_process_is_restarted_and_what_it_answered_stays(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with group(data_dir) as server:
        first, second = members(server)
        files = [(f"a{i}.bin", os.urandom(1000 + i)) for i in range(5)]
        async with session_on(server, first) as on_first, session_on(server, second) as on_second:
            answered = await ingest(on_first, server.url, files)
            assert [r["status"] for r in answered] == ["stored"] * 5
            # An upload still streaming into `first` when it dies: its spool file must go with it.
            stalled = asyncio.Event()

            async def body() -> AsyncIterator[bytes]:
                yield b"--b\r\nContent-Disposition: form-data; name=files; filename=big.bin\r\n\r\n"
                yield os.urandom(SPOOLED_SIZE)
                stalled.set()
                await asyncio.Event().wait()

            headers = {"Content-Type": "multipart/form-data; boundary=b"}
            cut = asyncio.create_task(on_first.post(server.url + "/ingest", data=body(), headers=headers))
            await stalled.wait()
            prefix = f"{first:x}-"
            assert await wait_until(lambda: any(p.name.startswith(prefix) for p in spool_files(data_dir)), WAIT_S)
            os.kill(first, signal.SIGKILL)
            # The other process keeps answering meanwhile.
            assert (await ingest(on_second, server.url, [("b.bin", b"still here")]))[0]["status"] == "stored"
            assert await wait_until(lambda: len(members(server)) == PROCESSES and first not in members(server), WAIT_S)
            cut.cancel()
            assert not any(p.name.startswith(prefix) for p in spool_files(data_dir)), "a dead process's spool file"
            for (_, payload), result in zip(files, answered, strict=True):
                async with on_second.get(f"{server.url}/files/{result['hash']}") as response:
                    assert response.status == 200
                    assert await response.read() == payload
        (restarted,) = set(members(server)) - {second}
        async with session_on(server, restarted) as on_restarted:
            again = await ingest(on_restarted, server.url, files[:1])
            assert again[0]["status"] == "duplicate"
        assert server.stop() == 0
    store_is_consistent(data_dir)


async def test_the_same_new_content_at_both_processes_is_stored_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with group(data_dir) as server:
        first, second = members(server)
        async with session_on(server, first) as on_first, session_on(server, second) as on_second:
            for round_number in range(20):
                payload = os.urandom(50_000 if round_number % 2 else 700_000)  # in memory, and spooled
                results = await asyncio.gather(
                    ingest(on_first, server.url, [("x.bin", payload)]),
                    ingest(on_second, server.url, [("y.bin", payload)]),
                )
                statuses = sorted(r[0]["status"] for r in results)
                assert statuses == ["duplicate", "stored"], f"round {round_number}: {statuses}"
        assert server.stop() == 0
    assert len(catalog_rows(data_dir)) == 20
    store_is_consistent(data_dir)


async def test_a_delete_racing_an_upload_in_the_other_process_stays_exact(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with group(data_dir) as server:
        first, second = members(server)
        async with session_on(server, first) as on_first, session_on(server, second) as on_second:
            for _ in range(15):
                payload = os.urandom(30_000)
                digest = blake3_hex(payload)
                assert (await ingest(on_first, server.url, [("d.bin", payload)]))[0]["status"] == "stored"

                async def delete(digest: str) -> int:
                    async with on_first.delete(f"{server.url}/files/{digest}") as response:
                        await response.read()
                        return response.status

                status, uploaded = await asyncio.gather(
                    delete(digest), ingest(on_second, server.url, [("d.bin", payload)])
                )
                assert status in (200, 204)
                # Whatever the order, an upload that was answered has its blob and its row.
                assert uploaded[0]["status"] in ("stored", "duplicate")
                async with on_second.get(f"{server.url}/files/{digest}") as response:
                    present = response.status == 200
                rows = catalog_rows(data_dir)
                assert present == (digest in rows)
                if present:
                    assert blob_problems(data_dir, [digest]) == []
        assert server.stop() == 0
    store_is_consistent(data_dir)


async def test_category_rules_put_on_one_process_reach_the_other(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rules = {"mime": {"image/*": "pictures/{subtype}"}, "default": "misc/other"}
    with group(data_dir) as server:
        first, second = members(server)
        async with session_on(server, first) as on_first, session_on(server, second) as on_second:
            async with on_first.put(server.url + "/categories", json=rules) as response:
                assert response.status == 200, await response.text()

            async def seen_by_second() -> bool:
                async with on_second.get(server.url + "/categories") as response:
                    shown: dict[str, Any] = await response.json()
                    return bool(shown["mime"] == rules["mime"])

            deadline = asyncio.get_running_loop().time() + RULES_BOUND_S
            while not await seen_by_second():
                assert asyncio.get_running_loop().time() < deadline, "the other process kept the old rules"
                await asyncio.sleep(0.05)
            result = (await ingest(on_second, server.url, [("p.png", png(7))]))[0]
            assert result["category"] == "pictures/png"
        assert server.stop() == 0


async def test_a_job_started_on_one_process_is_read_and_followed_on_the_other(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = [(f"j{i}.bin", os.urandom(20_000 + i)) for i in range(40)]
    with group(data_dir) as server:
        first, second = members(server)
        async with session_on(server, first) as on_first, session_on(server, second) as on_second:
            async with on_first.post(server.url + "/ingest?async=true", data=form(files)) as response:
                assert response.status == 202, await response.text()
                job_id = (await response.json())["job"]
            events: list[str] = []
            async with on_second.get(f"{server.url}/jobs/{job_id}/events") as response:
                assert response.status == 200
                async for kind, data in read_events(response):
                    events.append(kind)
                    if kind == "end":
                        assert data["state"] == "done"
                        assert data["counts"]["stored"] == len(files)
                        break
            assert events[0] == "state"
            assert events[-1] == "end"
            async with on_second.get(f"{server.url}/jobs/{job_id}") as response:
                body = await response.json()
            assert body["state"] == "done"
            assert sorted(r["hash"] for r in body["results"]) == sorted(blake3_hex(p) for _, p in files)
        assert server.stop() == 0


def total(text: str, name: str, label: str = "") -> float:
    """The sum of the samples of `name` in `/metrics` text whose labels include `label` (0 if none)."""
    found = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.partition("{")[0] == name and label in sample:
            found += float(value)
    return found


async def test_metrics_count_the_whole_server_whichever_process_answers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with group(data_dir) as server:
        first, second = members(server)
        async with session_on(server, first) as on_first, session_on(server, second) as on_second:
            await ingest(on_first, server.url, [(f"m{i}.bin", os.urandom(900)) for i in range(3)])
            await ingest(on_second, server.url, [(f"n{i}.bin", os.urandom(900)) for i in range(4)])
            for session in (on_first, on_second):
                async with session.get(server.url + "/metrics") as response:
                    text = await response.text()
                assert total(text, "rhinobox_ingest_files_total", 'status="stored"') == 7, text
                assert total(text, "rhinobox_http_requests_total", 'route="/ingest"') == 2, text
                assert total(text, "rhinobox_catalog_blobs") == 7
                assert total(text, "rhinobox_ingest_workers") > 0
        # A process that dies keeps its counts in the whole: they are the server's.
        os.kill(first, signal.SIGKILL)
        assert await wait_until(lambda: len(members(server)) == PROCESSES and first not in members(server), WAIT_S)
        async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as response:
            text = await response.text()
        assert total(text, "rhinobox_ingest_files_total", 'status="stored"') == 7, text
        assert server.stop() == 0


async def test_sigterm_lets_uploads_in_every_process_finish_then_exits_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = group(data_dir).start()
    try:
        first, second = members(server)
        payloads = {first: os.urandom(SPOOLED_SIZE), second: os.urandom(SPOOLED_SIZE)}
        halfway = {pid: asyncio.Event() for pid in payloads}
        go_on = asyncio.Event()

        async def upload(session: aiohttp.ClientSession, pid: int) -> dict[str, Any]:
            async def body() -> AsyncIterator[bytes]:
                yield b"--b\r\nContent-Disposition: form-data; name=files; filename=s.bin\r\n\r\n"
                yield payloads[pid][: SPOOLED_SIZE // 2]
                halfway[pid].set()
                await go_on.wait()
                yield payloads[pid][SPOOLED_SIZE // 2 :]
                yield b"\r\n--b--\r\n"

            headers = {"Content-Type": "multipart/form-data; boundary=b"}
            async with session.post(server.url + "/ingest", data=body(), headers=headers) as response:
                assert response.status == 200, await response.text()
                result: dict[str, Any] = (await response.json())["results"][0]
            return result

        async with session_on(server, first) as on_first, session_on(server, second) as on_second:
            uploads = [asyncio.create_task(upload(on_first, first)), asyncio.create_task(upload(on_second, second))]
            for event in halfway.values():
                await event.wait()
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # the members have received it and stopped accepting
            go_on.set()
            results = await asyncio.gather(*uploads)
        assert [r["status"] for r in results] == ["stored", "stored"]
        assert await asyncio.to_thread(server.proc.wait, WAIT_S) == 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    assert not (data_dir / RUN_MARKER_FILENAME).exists(), "a clean stop leaves no run marker"
    assert set(catalog_rows(data_dir)) == {blake3_hex(p) for p in payloads.values()}
    store_is_consistent(data_dir)


async def test_kill_9_of_the_whole_group_then_a_restart_leaves_a_consistent_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    answered: dict[str, bytes] = {}
    stop = asyncio.Event()

    async def client(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                files = [(f"k{i}.bin", os.urandom(size)) for i, size in enumerate((3000, 700_000, 12))]
                try:
                    results = await ingest(session, url, files)
                except (aiohttp.ClientError, ConnectionError):
                    return
                answered.update((r["hash"], payload) for r, (_, payload) in zip(results, files, strict=True))

    server = group(data_dir, RHINOBOX_FSYNC="always").start()
    try:
        pids = members(server)
        clients = [asyncio.create_task(client(server.url)) for _ in range(4)]
        assert await wait_until(lambda: len(answered) > 20, WAIT_S)
        await asyncio.to_thread(server.kill)  # the supervisor: the kernel kills its serving processes
        stop.set()
        await asyncio.gather(*clients)
        assert await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), WAIT_S)
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    assert (data_dir / RUN_MARKER_FILENAME).exists()
    with group(data_dir, RHINOBOX_FSYNC="always") as again:
        async with aiohttp.ClientSession() as session, session.get(again.url + "/healthz") as response:
            assert (await response.json())["reconcile"]["unclean_stop"] is True
        assert spool_files(data_dir) == []
        assert again.stop() == 0
    rows = catalog_rows(data_dir)
    assert [d for d in answered if d not in rows] == [], "answered uploads lost in the crash"
    store_is_consistent(data_dir, after_crash=True)


def test_a_second_server_on_the_same_data_dir_is_refused_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with group(data_dir):
        for processes in ("2", "1"):
            result = run_cli(
                "serve",
                env={
                    **os.environ,
                    "RHINOBOX_DATA_DIR": str(data_dir),
                    "RHINOBOX_ADDR": "127.0.0.1:0",
                    "RHINOBOX_PROCESSES": processes,
                    "RHINOBOX_LOG_LEVEL": "error",
                },
            )
            assert result.returncode == 1
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert "another RhinoBox process is using the data directory" in lines[0]


def test_every_save_of_the_rules_file_is_a_new_version(tmp_path: Path) -> None:
    """Other processes reload when the version differs: two saves within one tick of the file clock too."""
    store = FileRulesStore.in_data_dir(tmp_path, shared=True)
    versions = [store.write({"default": f"misc/v{i}"}) for i in range(20)]
    assert versions == sorted(set(versions)), "a save that other processes could not tell from the one before"
    saved = store.read()
    assert saved is not None
    assert saved.version == versions[-1]
    assert saved.document == {"default": "misc/v19"}


async def test_by_default_every_usable_core_gets_a_serving_process(tmp_path: Path) -> None:
    cores = usable_cores()
    with RhinoBoxProcess(tmp_path / "data", RHINOBOX_PROCESSES="") as server:  # empty: the default
        # One core: a single process, no supervisor (so no children).
        assert await wait_until(lambda: len(members(server)) == (cores if cores > 1 else 0), WAIT_S)
        files = [(f"p{i}.png", png(seed=900 + i)) for i in range(6)]
        async with aiohttp.ClientSession() as session:
            results = await ingest(session, server.url, files)
        assert [r["status"] for r in results] == ["stored"] * len(files)
    store_is_consistent(tmp_path / "data")
