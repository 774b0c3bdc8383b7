"""The Python client against the real app on a real socket (and tiny real servers for the failure cases)."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from rhinobox.app import create_app
from rhinobox.client import (
    FileResult,
    JobEvent,
    LocalFile,
    RetryPolicy,
    RhinoBoxClient,
    RhinoBoxClientError,
    ServerError,
    hash_file,
)
from rhinobox.client.uploader import Uploader, UploadItem, UploadOptions
from tests.helpers import Client, blake3_hex, blob_files, free_port, make_settings
from tests.samples import make_sample
from tests.server_process import RhinoBoxProcess

FAST_RETRY = RetryPolicy(attempts=4, base=0.05, cap=2.0)


def base_url(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


def write_samples(folder: Path, kinds: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, kind in enumerate(kinds):
        name, data = make_sample(kind, seed)
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


async def test_ingest_single_and_batch_give_typed_results_in_order(
    client: Client, tmp_path: Path, data_dir: Path
) -> None:
    paths = write_samples(tmp_path / "in", ["png", "pdf", "mp3", "zip"])
    (tmp_path / "in" / "empty.txt").write_bytes(b"")
    async with RhinoBoxClient(base_url(client)) as rb:
        single = await rb.ingest([paths[0]])
        batch = await rb.ingest([*paths, tmp_path / "in" / "empty.txt"], category="trip", comment="hello")
    assert single.http_status == 200
    assert single.ok
    assert single.results[0] == FileResult(
        index=0,
        name=paths[0].name,
        status="stored",
        hash=blake3_hex(paths[0].read_bytes()),
        size=paths[0].stat().st_size,
        mime="image/png",
        category="images/png",
        url=f"/files/{blake3_hex(paths[0].read_bytes())}",
        error=None,
    )
    assert batch.http_status == 207
    assert not batch.ok
    assert [r.name for r in batch.results] == [p.name for p in paths] + ["empty.txt"]
    assert [r.status for r in batch.results] == ["duplicate", "stored", "stored", "stored", "error"]
    assert batch.results[-1].error is not None
    assert batch.results[-1].error.code == "empty_file"
    assert batch.results[1].category == "documents/pdf/trip"
    assert (batch.stored, batch.duplicates, batch.failed) == (3, 1, 1)
    assert set(blob_files(data_dir)) == {blake3_hex(p.read_bytes()) for p in paths}


async def test_a_single_failed_file_is_a_result_not_an_exception(client: Client, tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    async with RhinoBoxClient(base_url(client)) as rb:
        result = await rb.ingest([empty])
    assert result.http_status == 422
    assert result.results[0].status == "error"
    assert result.results[0].error is not None
    assert result.results[0].error.code == "empty_file"


async def test_uploads_stream_from_files_and_digests_are_verified(client: Client, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    digest, size = hash_file(big)
    read: list[int] = []
    async with RhinoBoxClient(base_url(client)) as rb:
        good = await rb.ingest([LocalFile(big, "big.bin", digest)], on_read=read.append)
        wrong = await rb.ingest([LocalFile(big, "big.bin", "0" * 64)])
    assert good.results[0].hash == digest
    assert good.results[0].size == size
    assert sum(read) == size  # the body was read from the file as it went out
    assert max(read) < size  # in chunks, not whole
    assert wrong.results[0].error is not None
    assert wrong.results[0].error.code == "digest_mismatch"


async def test_async_ingest_and_job_events(client: Client, tmp_path: Path) -> None:
    paths = write_samples(tmp_path / "in", ["gif", "wav", "text", "python", "jpeg"])
    events: list[JobEvent] = []
    async with RhinoBoxClient(base_url(client)) as rb:
        ref = await rb.ingest_async(paths)
        final = await rb.wait_for_job(ref.job, on_event=events.append)
        again = await rb.job(ref.job)
    assert ref.status_url == f"/jobs/{ref.job}"
    assert ref.events_url == f"/jobs/{ref.job}/events"
    assert final.state == "done"
    assert final.final
    assert final.counts.total == final.counts.done == final.counts.stored == len(paths)
    assert final.results is not None
    assert [r.name for r in final.results] == [p.name for p in paths]
    assert events[0].kind == "state"
    assert events[-1].kind == "end"
    progress = [e for e in events if e.kind == "progress"]
    assert all(e.result is not None for e in progress)
    assert events[0].status.counts.done + len(progress) == len(paths)
    assert again.results == final.results
    with pytest.raises(ServerError) as missing:
        async with RhinoBoxClient(base_url(client)) as rb:
            await rb.job("nope")
    assert missing.value.status == 404
    assert missing.value.code == "job_not_found"


async def test_missing_and_put_by_hash(client: Client, tmp_path: Path) -> None:
    known, new = write_samples(tmp_path / "in", ["png", "pdf"])
    async with RhinoBoxClient(base_url(client)) as rb:
        await rb.ingest([known])
        known_digest, new_digest = hash_file(known)[0], hash_file(new)[0]
        assert await rb.missing([known_digest, new_digest]) == [new_digest]
        put = await rb.put_blob(new)
        dup = await rb.put_blob(LocalFile(known, "renamed %41 ü.png", known_digest), send_body=False)
        with pytest.raises(ServerError) as mismatch:
            await rb.put_blob(new, digest="f" * 64)
        meta = await rb.meta(known_digest)
    assert (put.status, put.hash) == ("stored", new_digest)
    assert (dup.status, dup.hash, dup.size) == ("duplicate", known_digest, known.stat().st_size)
    assert mismatch.value.status == 422
    assert mismatch.value.code == "digest_mismatch"
    assert sorted(u.name for u in meta.uploads) == sorted(["renamed %41 ü.png", known.name])


async def test_download_resumes_a_partial_file_with_a_range(client: Client, tmp_path: Path) -> None:
    source = tmp_path / "video.bin"
    source.write_bytes(os.urandom(700_000))
    digest = hash_file(source)[0]
    async with RhinoBoxClient(base_url(client)) as rb:
        await rb.ingest([source])
        whole = await rb.download(digest, tmp_path / "whole.bin")
        # A partial download holding the right first bytes is completed, not restarted.
        part = tmp_path / "resumed.bin.part"
        part.write_bytes(source.read_bytes()[:300_000])
        counted: list[int] = []
        resumed = await rb.download(digest, tmp_path / "resumed.bin", on_bytes=counted.append)
        # A partial file with wrong bytes proves the Range was used: only the tail came from the server.
        bad = tmp_path / "bad.bin.part"
        bad.write_bytes(b"\0" * 300_000)
        with pytest.raises(RhinoBoxClientError, match="hash to"):
            await rb.download(digest, tmp_path / "bad.bin")
        fresh = await rb.download(digest, tmp_path / "bad.bin", resume=False)
    assert whole.read_bytes() == source.read_bytes()
    assert resumed.read_bytes() == source.read_bytes()
    assert not part.exists()
    assert counted[0] == 300_000
    assert sum(counted) == 700_000
    assert not bad.exists()
    assert fresh.read_bytes() == source.read_bytes()


async def test_list_meta_stats_delete(client: Client, tmp_path: Path) -> None:
    paths = write_samples(tmp_path / "in", ["png", "gif", "pdf"])
    async with RhinoBoxClient(base_url(client)) as rb:
        await rb.ingest(paths, comment="first")
        page = await rb.list_files(category="images", limit=1)
        images = [f async for f in rb.iter_files(category="images", limit=1)]
        stats = await rb.stats()
        digest = hash_file(paths[2])[0]
        meta = await rb.meta(digest)
        await rb.delete(digest)
        with pytest.raises(ServerError) as gone:
            await rb.meta(digest)
        with pytest.raises(ServerError) as bad:
            await rb.delete("xyz")
    assert len(page.files) == 1
    assert page.next is not None
    assert sorted(f.category for f in images) == ["images/gif", "images/png"]
    assert stats.blobs == 3
    assert stats.categories["documents/pdf"].blobs == 1
    assert meta.file.hash == digest
    assert meta.uploads[0].comment == "first"
    assert gone.value.code == "not_found"
    assert bad.value.code == "bad_hash"


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_503_is_retried_after_the_servers_retry_after(tmp_path: Path) -> None:
    """A real server that is overloaded twice (Retry-After: 1) and then answers."""
    calls: list[float] = []

    async def stats(request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            body = {"error": {"code": "overloaded", "message": "busy"}}
            return web.json_response(body, status=503, headers={"Retry-After": "1"})
        return web.json_response({"blobs": 7})

    app = web.Application()
    app.router.add_get("/stats", stats)
    port = free_port()
    runner = await serve(app, port)
    try:
        async with RhinoBoxClient(f"http://127.0.0.1:{port}", retry=FAST_RETRY) as rb:
            assert (await rb.stats()).blobs == 7
        gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
        calls.clear()
        async with RhinoBoxClient(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=2, base=0.01)) as rb:
            with pytest.raises(ServerError) as refused:
                await rb.stats()
    finally:
        await runner.cleanup()
    assert len(gaps) == 2
    assert min(gaps) >= 0.9
    assert refused.value.status == 503
    assert refused.value.code == "overloaded"
    assert len(calls) == 2


async def test_connection_errors_are_retried_until_the_server_is_up() -> None:
    port = free_port()

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"blobs": 1})

    app = web.Application()
    app.router.add_get("/stats", stats)

    async def start_late() -> web.AppRunner:
        await asyncio.sleep(0.3)
        return await serve(app, port)

    starter = asyncio.create_task(start_late())
    async with RhinoBoxClient(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=8, base=0.1)) as rb:
        answered = await rb.stats()
    runner = await starter
    await runner.cleanup()
    assert answered.blobs == 1
    async with RhinoBoxClient(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(attempts=2, base=0.01)) as rb:
        with pytest.raises(aiohttp.ClientConnectionError):
            await rb.stats()


def test_retry_policy_prefers_retry_after_and_caps_backoff() -> None:
    policy = RetryPolicy(base=1.0, factor=2.0, cap=5.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=100.0) == 5.0


def test_the_documented_example_runs_against_a_real_server(tmp_path: Path) -> None:
    """docs/client.md's example, run as written (twice: the second run finds everything known)."""
    doc = (Path(__file__).parent.parent / "docs" / "client.md").read_text()
    example = doc.split("### Example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(example)
    paths = write_samples(tmp_path / "in", ["png", "pdf", "wav"])
    with RhinoBoxProcess(tmp_path / "data") as server:
        env = {**os.environ, "RHINOBOX_SERVER": server.url}
        runs = [
            subprocess.run(
                [sys.executable, str(script), *map(str, paths)],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )
            for _ in range(2)
        ]
    first, second = runs
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith("state ")
    assert "end 3" in first.stdout
    assert "3 blobs," in first.stdout
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("known: duplicate") == 3
    assert "end 3" not in second.stdout


class CuttingProxy:
    """A real TCP proxy that, for the first `cut` connections, relays the request but hangs up as
    soon as the server starts answering: the server has done the work, the client never hears of it."""

    def __init__(self, upstream: str, cut: int = 1) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.cut = cut
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        cut = self.connections <= self.cut
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        forward = asyncio.create_task(_pump(reader, up_writer))
        try:
            if cut:
                await up_reader.read(1)  # the server answered: it committed whatever was asked
            else:
                await _pump(up_reader, writer)
        finally:
            forward.cancel()
            writer.close()
            up_writer.close()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()


async def test_a_post_cut_off_after_the_server_committed_is_not_sent_again(client: Client, tmp_path: Path) -> None:
    """POST /ingest and DELETE are not idempotent: an error after sending surfaces, it is not retried."""
    upload = tmp_path / "once.txt"
    upload.write_text("recorded exactly once\n")
    other = tmp_path / "job.txt"
    other.write_text("one job, not two\n")
    digest = hash_file(upload)[0]
    async with RhinoBoxClient(base_url(client)) as direct:
        async with CuttingProxy(base_url(client)) as url, RhinoBoxClient(url, retry=FAST_RETRY) as rb:
            with pytest.raises(aiohttp.ClientConnectionError):
                await rb.ingest([upload])
        meta = await direct.meta(digest)
        assert [u.name for u in meta.uploads] == ["once.txt"]  # the server stored it, once

        proxy = CuttingProxy(base_url(client))
        async with proxy as url, RhinoBoxClient(url, retry=FAST_RETRY) as rb:
            with pytest.raises(aiohttp.ClientConnectionError):
                await rb.ingest_async([other])
        assert proxy.connections == 1  # no second job was started

        async with CuttingProxy(base_url(client)) as url, RhinoBoxClient(url, retry=FAST_RETRY) as rb:
            with pytest.raises(aiohttp.ClientConnectionError):
                await rb.delete(digest)  # not retried into a misleading not_found
        with pytest.raises(ServerError) as gone:
            await direct.meta(digest)
        assert gone.value.code == "not_found"

        # Idempotent requests still retry through the same failure.
        proxy = CuttingProxy(base_url(client))
        async with proxy as url, RhinoBoxClient(url, retry=FAST_RETRY) as rb:
            assert (await rb.health())["status"] == "ok"
            assert (await rb.put_blob(upload)).status == "stored"
        assert proxy.connections == 2  # health: cut, then answered on a new connection the PUT reused


async def test_a_refused_post_is_retried_until_the_server_is_up(tmp_path: Path) -> None:
    """A refused connection proves the request never arrived: even POST /ingest retries it."""
    upload = tmp_path / "late.txt"
    upload.write_text("sent once the server listens\n")
    port = free_port()
    app = create_app(make_settings(tmp_path / "data"))

    async def start_late() -> web.AppRunner:
        await asyncio.sleep(0.3)
        return await serve(app, port)

    starter = asyncio.create_task(start_late())
    try:
        async with RhinoBoxClient(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=8, base=0.1)) as rb:
            result = await rb.ingest([upload])
            meta = await rb.meta(hash_file(upload)[0])
    finally:
        await (await starter).cleanup()
    assert result.results[0].status == "stored"
    assert len(meta.uploads) == 1


async def test_a_retried_batch_counts_its_bytes_once(client: Client, tmp_path: Path) -> None:
    """A real front server that reads the whole body, answers 503 once, then passes requests on."""
    upstream = base_url(client)
    posts: list[int] = []

    async def ingest(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        posts.append(len(body))
        if len(posts) % 2:  # every first attempt is refused after its body arrived
            error = {"error": {"code": "overloaded", "message": "busy"}}
            return web.json_response(error, status=503, headers={"Retry-After": "0"})
        async with aiohttp.ClientSession() as session:
            headers = {"Content-Type": request.headers["Content-Type"]}
            async with session.post(upstream + "/ingest", data=body, headers=headers) as answer:
                return web.json_response(await answer.json(), status=answer.status)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/ingest", ingest)
    port = free_port()
    runner = await serve(app, port)
    paths = [tmp_path / f"f{n}.bin" for n in range(3)]
    for n, path in enumerate(paths):
        path.write_bytes(os.urandom(400_000 + n))
    total = sum(p.stat().st_size for p in paths)

    try:
        async with RhinoBoxClient(f"http://127.0.0.1:{port}", retry=FAST_RETRY) as rb:
            read: list[int] = []
            result = await rb.ingest(paths[:1], on_read=read.append)
            counted = _Counting()
            report = await Uploader(rb, UploadOptions(skip_known=False), counted).run([(p, str(p)) for p in paths[1:]])
    finally:
        await runner.cleanup()
    assert len(posts) == 4  # each body was sent in full, refused, and sent again
    assert result.results[0].status == "stored"
    assert sum(read) == paths[0].stat().st_size  # not twice the file
    assert read.count(-paths[0].stat().st_size) == 1  # the refused attempt was taken back
    assert [item.status for item in report.items] == ["stored", "stored"]
    assert counted.total == total - paths[0].stat().st_size
    assert counted.peak == counted.total  # the bar never ran past the batch


class _Counting:
    """An `UploadListener` that sums the bytes reported sent and remembers the highest sum."""

    def __init__(self) -> None:
        self.total = 0
        self.peak = 0

    def planned(self, files: int, size: int) -> None:
        pass

    def hashed(self, item: UploadItem) -> None:
        pass

    def sent(self, size: int) -> None:
        self.total += size
        self.peak = max(self.peak, self.total)

    def finished(self, item: UploadItem) -> None:
        pass


async def test_a_job_of_thousands_of_files_ends_with_every_result(client: Client, tmp_path: Path) -> None:
    """The `end` event of a 2,500-file job is one data line far over aiohttp's readline limit."""
    folder = tmp_path / "many"
    folder.mkdir()
    paths = [folder / f"note-{n:05}.txt" for n in range(2500)]
    for n, path in enumerate(paths):
        path.write_text(f"note {n}\n")
    events: list[JobEvent] = []
    async with RhinoBoxClient(base_url(client)) as rb:
        ref = await rb.ingest_async(paths)
        final = await rb.wait_for_job(ref.job, on_event=events.append)
        async for event in rb.job_events(ref.job):  # a finished job: state, then end at once
            events.append(event)
    assert final.state == "done"
    assert final.results is not None
    assert [r.name for r in final.results] == [p.name for p in paths]
    assert final.counts.stored == len(paths)
    assert [e.kind for e in events].count("end") == 2  # both came over the event stream, not by polling
    assert events[-1].status.results == final.results
