"""Crash safety: kill -9 the real server at random moments under concurrent ingest, restart, check the store.

After every restart: every catalog row has its blob and the blob hashes to its name; every blob
file on disk is whole (hashes to its name, catalogued or not); no spool file survived the start;
and every upload a client saw answered (RHINOBOX_FSYNC=always) is in the catalog.

kill -9 loses the process, not the page cache: this proves the ordering (whole bytes before the name,
the name before the catalog row) and the restart clean-up, not what reaches the platters on power
loss. What a power cut can add (a name synced without its bytes, a row whose blob did not land) is
planted by hand in tests/test_startup.py, which checks that the start after an unclean stop moves the
blob aside and drops the rows of uploads that were never answered.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp

from rhinobox.runmarker import RUN_MARKER_FILENAME
from tests.helpers import blake3_hex, blob_files, form, spool_files
from tests.server_process import RhinoBoxProcess, blob_problems, catalog_rows

ROUNDS = 5
CLIENTS = 4
KILL_AFTER = (0.4, 1.6)  # seconds of load before the kill, drawn per round
SPOOLED_SIZE = 600 * 1024  # larger than the in-memory arena limit: goes through a spool file


def batch(rng: random.Random) -> list[tuple[str, bytes]]:
    files = []
    for _ in range(rng.randint(1, 6)):
        size = SPOOLED_SIZE if rng.random() < 0.15 else rng.randint(1, 48 * 1024)
        files.append((f"f{rng.getrandbits(32):08x}.bin", rng.randbytes(size)))
    return files


Answered = dict[str, tuple[int, bytes]]  # digest -> (size, content) of every file a 200 confirmed


async def client(url: str, rng: random.Random, answered: Answered, stop: asyncio.Event) -> tuple[int, int]:
    """Upload batches until the server dies; returns (requests answered, requests cut off by the kill)."""
    requests = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while not stop.is_set():
            files = batch(rng)
            if answered and rng.random() < 0.2:  # a duplicate of something already stored
                files.append(("dup.bin", rng.choice(list(answered.values()))[1]))
            try:
                async with session.post(url + "/ingest", data=form(files)) as response:
                    if response.status != 200:
                        continue
                    results = (await response.json())["results"]
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                return requests, 1  # the server was killed under us: this request's answer never came
            requests += 1
            for (_, payload), result in zip(files, results, strict=True):
                assert result["hash"] == blake3_hex(payload)
                answered[result["hash"]] = (len(payload), payload)
    return requests, 0


async def unclean_stop_seen(url: str) -> bool:
    """Whether the server's start found the run marker of a run that never stopped (and checked first)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as response:
        return bool((await response.json())["reconcile"]["unclean_stop"])


def check_store(data_dir: Path, answered: Answered) -> None:
    rows = catalog_rows(data_dir)
    assert blob_problems(data_dir, rows) == [], "catalog rows without an intact blob"
    assert blob_problems(data_dir, blob_files(data_dir)) == [], "a blob file that is not whole"
    missing = [digest for digest in answered if digest not in rows]
    assert missing == [], "answered uploads lost in the crash"
    assert all(rows[digest] == size for digest, (size, _) in answered.items())


async def test_kill_9_under_load_never_loses_answered_uploads_or_corrupts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(20261123)
    answered: Answered = {}
    total_requests = cut_off = 0
    for round_number in range(ROUNDS):
        server = RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="always", RHINOBOX_WORKERS="4").start()
        try:
            assert spool_files(data_dir) == [], "spool files survived the start"
            check_store(data_dir, answered)
            assert await unclean_stop_seen(server.url) is (round_number > 0), "the start did not see the crash"
            stop = asyncio.Event()
            clients = [
                asyncio.create_task(client(server.url, random.Random(rng.random()), answered, stop))
                for _ in range(CLIENTS)
            ]
            await asyncio.sleep(rng.uniform(*KILL_AFTER))
            await asyncio.to_thread(server.kill)
            assert (data_dir / RUN_MARKER_FILENAME).exists(), "the next start would not know this run crashed"
            stop.set()
            for done, cut in await asyncio.gather(*clients):
                total_requests += done
                cut_off += cut
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.kill()
    server = RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="always").start()
    try:
        assert spool_files(data_dir) == []
        check_store(data_dir, answered)
    finally:
        assert server.stop() == 0
    assert not (data_dir / RUN_MARKER_FILENAME).exists(), "a clean stop leaves no run marker"
    assert total_requests > 0, "no upload was ever answered: the test proved nothing"
    assert cut_off > 0, "no kill landed during a request: the test proved nothing"
    assert len(answered) > ROUNDS
