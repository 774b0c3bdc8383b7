"""Two RhinoBox nodes (real processes) on one PostgreSQL and one Swift, behind one real nginx.

What must hold past one machine: concurrent batches through the balancer all land; the same new
content sent to both nodes at once ends as one blob, two upload records and exactly one `stored`;
a delete on one node racing an upload on the other never leaves a record without its blob; every
file comes back whole through nginx; and when a node is killed mid-batch, the survivor keeps
serving and every catalog row still has its blob in the store, with the right hash.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
import blake3
import obstore
import pytest
from obstore.store import S3Store

from tests.helpers import assert_error, form, free_port, wait_until_listening
from tests.samples import SAMPLES, make_sample
from tests.server_process import RhinoBoxProcess, generated_digest, stream_multipart

MiB: Final = 1024 * 1024
NGINX_START_TIMEOUT_S: Final = 10.0
BOUNDARY: Final = "rhinobox-scale-out"
UPSTREAM_HEADER: Final = "X-Upstream"

NGINX_CONF: Final = """
{user}
worker_processes 1;
pid {dir}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    upstream rhinobox {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://rhinobox;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 120s;
            add_header {header} $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground on a free port, with `upstreams` (host:port) round-robin."""

    def __init__(self, directory: Path, upstreams: list[str]) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            dir=directory,
            port=self.port,
            header=UPSTREAM_HEADER,
            servers="\n".join(f"        server {upstream} max_fails=1 fail_timeout=30s;" for upstream in upstreams),
        )
        (directory / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [
                nginx,
                "-p",
                str(directory),
                "-c",
                str(directory / "nginx.conf"),
                "-e",
                str(directory / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if wait_until_listening(self.port, self.proc, NGINX_START_TIMEOUT_S):
            return
        self.stop()
        raise RuntimeError(f"nginx did not start: {(directory / 'error.log').read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish in-flight requests
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Cluster:
    nodes: list[RhinoBoxProcess]
    nginx: Nginx
    dsn: str
    bucket: S3Store

    def node_addr(self, index: int) -> str:
        return self.nodes[index].url.removeprefix("http://")


def node_env(dsn: str, s3: dict[str, str]) -> dict[str, str]:
    env = {f"RHINOBOX_{name.upper()}": value for name, value in s3.items()}
    return env | {"RHINOBOX_CATALOG": dsn, "RHINOBOX_WORKERS": "4", "RHINOBOX_MIN_FREE_MB": "0"}


def outside_bucket(s3: dict[str, str]) -> S3Store:
    bucket, _, prefix = s3["blobs"].removeprefix("s3://").partition("/")
    return S3Store(
        bucket,
        prefix=prefix,
        config={
            "endpoint": s3["s3_endpoint"],
            "region": s3["s3_region"],
            "access_key_id": s3["s3_access_key"],
            "secret_access_key": s3["s3_secret_key"],
        },
        client_options={"allow_http": True},
    )


@pytest.fixture
def cluster(tmp_path: Path, postgres_dsn: str, s3_overrides: dict[str, str]) -> Iterator[Cluster]:
    env = node_env(postgres_dsn, s3_overrides)
    nodes = [RhinoBoxProcess(tmp_path / f"node{i}", **env) for i in range(2)]
    try:
        for node in nodes:
            node.start()
        nginx = Nginx(tmp_path / "nginx", [node.url.removeprefix("http://") for node in nodes])
        try:
            yield Cluster(nodes, nginx, postgres_dsn, outside_bucket(s3_overrides))
        finally:
            nginx.stop()
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.stop(signal.SIGKILL)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def post_batch(
    http: aiohttp.ClientSession, url: str, files: list[tuple[str, bytes]]
) -> tuple[dict[str, Any], str]:
    """POST /ingest; the body and the node that answered (nginx's X-Upstream, or the node's own url)."""
    async with http.post(url + "/ingest", data=form(files)) as response:
        assert response.status == 200, await response.text()
        return await response.json(), response.headers.get(UPSTREAM_HEADER, url)


async def catalog_state(dsn: str) -> tuple[dict[str, int], int]:
    """digest -> size of every blob row, and the number of upload rows, read straight from PostgreSQL."""
    conn = await asyncpg.connect(dsn)
    try:
        blobs = {row["hash"]: row["size"] for row in await conn.fetch("SELECT hash, size FROM blobs")}
        uploads = await conn.fetchval("SELECT count(*) FROM uploads")
        return blobs, int(uploads)
    finally:
        await conn.close()


def store_problems(bucket: S3Store, catalog: dict[str, int]) -> list[str]:
    """Catalog rows whose object is missing from the bucket, has another size, or another hash."""
    problems = []
    for digest, size in catalog.items():
        try:
            data = bytes(obstore.get(bucket, f"{digest[:2]}/{digest}").bytes())
        except FileNotFoundError:
            problems.append(f"missing {digest}")
            continue
        if len(data) != size or blake3.blake3(data).hexdigest() != digest:
            problems.append(f"corrupt {digest}")
    return problems


def stored_digests(bucket: S3Store) -> set[str]:
    return {meta["path"].rpartition("/")[2] for page in obstore.list(bucket) for meta in page}


def sample_files(tag: str, count: int, *, seed: int) -> list[tuple[str, bytes]]:
    """`count` small media files, distinct by seed, named after `tag`."""
    kinds = list(SAMPLES)
    made = (make_sample(kinds[i % len(kinds)], seed + i) for i in range(count))
    return [(f"{tag}-{name}", data) for name, data in made]


async def test_batches_through_nginx_land_once_and_read_back(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    shared = sample_files("shared", 6, seed=10_000)  # in every batch: dedup across both nodes at once
    batches = [sample_files(f"b{b}", 25, seed=b * 100) + shared for b in range(8)]
    batches[3].append(("large.bin", os.urandom(9 * MiB)))  # a multipart upload to S3
    results = await asyncio.gather(*(post_batch(http, cluster.nginx.url, batch) for batch in batches))
    answered_by = {upstream for _, upstream in results}
    assert answered_by == {cluster.node_addr(0), cluster.node_addr(1)}  # nginx used both nodes
    sent: dict[str, bytes] = {}
    statuses: dict[str, list[str]] = {}
    for (body, _), batch in zip(results, batches, strict=True):
        assert body["failed"] == 0
        for result, (name, payload) in zip(body["results"], batch, strict=True):
            assert result["hash"] == blake3.blake3(payload).hexdigest(), name
            sent[result["hash"]] = payload
            statuses.setdefault(result["hash"], []).append(result["status"])
    for digest, seen in statuses.items():
        assert seen.count("stored") == 1, (digest, seen)  # exactly one upload stored each blob
    catalog, uploads = await catalog_state(cluster.dsn)
    assert catalog == {digest: len(payload) for digest, payload in sent.items()}
    assert uploads == sum(len(batch) for batch in batches)
    assert stored_digests(cluster.bucket) == set(sent)
    for digest, payload in sent.items():  # every file back through nginx, from whichever node
        async with http.get(f"{cluster.nginx.url}/files/{digest}") as response:
            assert response.status == 200
            assert await response.read() == payload, digest
    large = blake3.blake3(batches[3][-1][1]).hexdigest()
    async with http.get(f"{cluster.nginx.url}/files/{large}", headers={"Range": "bytes=5000000-5000099"}) as ranged:
        assert ranged.status == 206
        assert await ranged.read() == batches[3][-1][1][5_000_000:5_000_100]


async def test_same_new_content_at_both_nodes_at_once(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    for round_number in range(4):
        files = sample_files(f"r{round_number}", 20, seed=50_000 + round_number * 100)
        files.append((f"r{round_number}-big.bin", os.urandom(2 * MiB + round_number)))  # spooled, not in an arena
        (first, _), (second, _) = await asyncio.gather(
            post_batch(http, cluster.nodes[0].url, files), post_batch(http, cluster.nodes[1].url, files)
        )
        for a, b in zip(first["results"], second["results"], strict=True):
            assert a["hash"] == b["hash"]
            assert sorted([a["status"], b["status"]]) == ["duplicate", "stored"], (a, b)
    catalog, uploads = await catalog_state(cluster.dsn)
    assert len(catalog) == 4 * 21
    assert uploads == 2 * 4 * 21  # one blob, two upload records each
    assert store_problems(cluster.bucket, catalog) == []
    assert stored_digests(cluster.bucket) == set(catalog)


async def test_delete_on_one_node_racing_upload_on_the_other(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    outcomes: set[tuple[int, str]] = set()
    for round_number in range(12):
        files = [make_sample("png", 90_000 + round_number % 3)]
        digest = blake3.blake3(files[0][1]).hexdigest()

        async def delete(digest: str = digest) -> int:
            async with http.delete(f"{cluster.nodes[1].url}/files/{digest}") as response:
                return response.status

        (body, _), deleted = await asyncio.gather(post_batch(http, cluster.nodes[0].url, files), delete())
        outcomes.add((deleted, body["results"][0]["status"]))
        catalog, _ = await catalog_state(cluster.dsn)
        # Whichever won, no record may point at a missing blob, and a listed blob is in the store.
        assert store_problems(cluster.bucket, catalog) == []
        assert (digest in catalog) == (digest in stored_digests(cluster.bucket))
    assert {status for status, _ in outcomes} <= {204, 404}


async def test_a_node_killed_mid_batch_leaves_the_store_consistent(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    victim, survivor = cluster.nodes
    doomed = [(f"d{i}.bin", 7000 + i, 3 * MiB if i % 4 == 0 else 60_000 + i) for i in range(16)]
    killed = asyncio.Event()

    async def after_file(index: int) -> None:
        if index == 9:
            victim.kill()  # no await in between: the reset may cancel this coroutine at the next one
            killed.set()

    async def doomed_upload() -> None:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        body = stream_multipart(BOUNDARY, doomed, after_file)
        async with http.post(victim.url + "/ingest", data=body, headers=headers) as response:
            await response.read()

    doomed_task = asyncio.ensure_future(doomed_upload())
    survivor_body, _ = await post_batch(http, survivor.url, sample_files("live", 40, seed=70_000))
    with pytest.raises((aiohttp.ClientError, ConnectionError)):
        await doomed_task
    assert killed.is_set()
    assert survivor_body["failed"] == 0

    # Through nginx, the dead node is skipped: every later batch lands on the survivor.
    after = [sample_files(f"after{b}", 10, seed=80_000 + b * 100) for b in range(4)]
    bodies = await asyncio.gather(*(post_batch(http, cluster.nginx.url, batch) for batch in after))
    assert {upstream.rsplit(", ", 1)[-1] for _, upstream in bodies} == {cluster.node_addr(1)}
    assert all(body["failed"] == 0 for body, _ in bodies)

    catalog, _ = await catalog_state(cluster.dsn)
    assert store_problems(cluster.bucket, catalog) == []  # every row's blob is there, whole
    answered = {r["hash"] for body in [survivor_body, *(b for b, _ in bodies)] for r in body["results"]}
    assert answered <= set(catalog)
    # The victim died before it had the whole body: nothing of that request was committed or recorded.
    doomed_digests = {generated_digest(seed, size) for _, seed, size in doomed}
    assert doomed_digests.isdisjoint(catalog)
    assert doomed_digests.isdisjoint(stored_digests(cluster.bucket))
    for digest in list(answered)[:20]:
        async with http.get(f"{cluster.nginx.url}/files/{digest}") as response:
            assert response.status == 200
            assert blake3.blake3(await response.read()).hexdigest() == digest

    # The victim comes back: its stale spool files are cleared, and it serves the shared store again.
    assert list(victim.data_dir.joinpath("tmp").iterdir()) != []  # the large files it was spooling
    victim.start()
    assert list(victim.data_dir.joinpath("tmp").iterdir()) == []
    some = next(iter(answered))
    async with http.get(f"{victim.url}/files/{some}") as response:
        assert response.status == 200
    # Its start-up reconciliation compares the whole bucket with the whole catalog: nothing is amiss.
    report = await reconciliation(http, victim.url)
    assert (report["state"], report["orphan_blobs"], report["missing_blobs"]) == ("done", 0, 0)


async def reconciliation(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The node's reconciliation report, once it has finished (it runs in the background)."""
    for _ in range(200):
        async with http.get(f"{url}/healthz") as response:
            report: dict[str, Any] = (await response.json())["reconcile"]
        if report["state"] not in ("pending", "running"):
            return report
        await asyncio.sleep(0.05)
    raise AssertionError(f"reconciliation did not finish: {report}")


async def test_a_resumable_upload_lives_on_the_node_that_created_it(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Each node keeps its partial uploads on its own disk (docs/resumable.md): every request of an upload
    must reach the node that created it; another node says so with a clear 404, and once complete the
    file is in the shared store and catalog, readable from any node."""
    payload = os.urandom(3 * MiB + 7)
    tus = {"Tus-Resumable": "1.0.0"}
    chunk = {**tus, "Content-Type": "application/offset+octet-stream"}
    first, other = cluster.nodes[0].url, cluster.nodes[1].url
    async with http.post(f"{first}/uploads/", headers={**tus, "Upload-Length": str(len(payload))}) as created:
        assert created.status == 201
        upload = created.headers["Location"]
    half = len(payload) // 2
    async with http.patch(f"{other}{upload}", data=payload[:half], headers={**chunk, "Upload-Offset": "0"}) as wrong:
        await assert_error(wrong, 404, "upload_not_found")
    async with http.patch(f"{first}{upload}", data=payload[:half], headers={**chunk, "Upload-Offset": "0"}) as part:
        assert part.status == 204
    async with http.patch(
        f"{first}{upload}", data=payload[half:], headers={**chunk, "Upload-Offset": str(half)}
    ) as done:
        assert done.status == 204, await done.text()
        digest = json.loads(done.headers["RhinoBox-Result"])["hash"]
    assert digest == blake3.blake3(payload).hexdigest()
    async with http.get(f"{other}/files/{digest}") as download:
        assert download.status == 200
        assert await download.read() == payload
    catalog, _ = await catalog_state(cluster.dsn)
    assert store_problems(cluster.bucket, {digest: catalog[digest]}) == []
