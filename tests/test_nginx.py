"""RhinoBox behind a real nginx configured with docs/deploy/nginx.conf (ports and paths substituted).

Checks through nginx: a batch upload, a 200 MiB streamed upload, a download with Range, a 304, and
that download bytes come from nginx (X-Accel-Redirect), not from Python.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import assert_error, blake3_hex, form, free_port, wait_until_listening
from tests.samples import SAMPLES, make_sample
from tests.server_process import RhinoBoxProcess, catalog_rows, generated_bytes, generated_digest, stream_multipart

REPO = Path(__file__).resolve().parent.parent
SITE_CONFIG = REPO / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ACCEL_PREFIX = "/_rhinobox_blobs"
MiB = 1024 * 1024
BIG_SIZE = 200 * MiB
BIG_SEED = 200
START_TIMEOUT = 15.0

MAIN_CONFIG = """
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/rhinobox.conf;
}}
"""


@dataclass(frozen=True)
class Deployment:
    url: str  # nginx
    upstream: str  # RhinoBox itself
    data_dir: Path
    nginx_dir: Path
    rhinobox: RhinoBoxProcess


def render_site(upstream: str, port: int, blobs_dir: Path) -> str:
    """docs/deploy/nginx.conf with the test's addresses: every substitution must hit exactly once."""
    text = SITE_CONFIG.read_text()
    for old, new in (
        ("server 127.0.0.1:8090;", f"server {upstream};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("alias /var/lib/rhinobox/blobs/;", f"alias {blobs_dir}/;"),
    ):
        assert text.count(old) == 1, f"docs/deploy/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    data_dir = root / "data"
    rhinobox = RhinoBoxProcess(data_dir, RHINOBOX_ACCEL_REDIRECT=ACCEL_PREFIX).start()
    nginx_dir = root / "nginx"
    nginx_dir.mkdir()
    port = free_port()
    upstream = rhinobox.url.removeprefix("http://")
    (nginx_dir / "rhinobox.conf").write_text(render_site(upstream, port, data_dir / "blobs"))
    # Workers of a root master run as `nobody` unless told otherwise, and pytest's tmp dirs are 0700.
    user = "user root;" if os.geteuid() == 0 else ""
    (nginx_dir / "nginx.conf").write_text(MAIN_CONFIG.format(root=nginx_dir, user=user))
    command = [NGINX, "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"), "-e", str(nginx_dir / "error.log")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    nginx = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_until_listening(port, nginx, START_TIMEOUT):
            log = (nginx_dir / "error.log").read_text(errors="replace")
            raise RuntimeError(f"nginx did not listen on {port} (exit status {nginx.poll()}): {log}")
        yield Deployment(f"http://127.0.0.1:{port}", rhinobox.url, data_dir, nginx_dir, rhinobox)
    finally:
        nginx.terminate()
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
        rhinobox.stop()


async def access_line(deployment: Deployment, request_id: str) -> dict[str, object]:
    """RhinoBox's access line for a request; it is written just after the answer is sent, so wait a little."""
    for _ in range(100):
        for raw in deployment.rhinobox.log_path.read_text().splitlines():
            line: dict[str, object] = json.loads(raw)
            if line["logger"] == "rhinobox.access" and line["request_id"] == request_id:
                return line
        await asyncio.sleep(0.05)
    raise AssertionError(f"no access line for request {request_id}")


async def test_batch_upload_through_nginx(deployment: Deployment) -> None:
    files = [make_sample(kind, seed) for seed in range(3) for kind in SAMPLES]
    async with (
        aiohttp.ClientSession() as session,
        session.post(deployment.url + "/ingest", data=form(files)) as response,
    ):
        assert response.status == 200
        body = await response.json()
        request_id = response.headers["X-Request-ID"]
    assert body["failed"] == 0
    assert [r["hash"] for r in body["results"]] == [blake3_hex(payload) for _, payload in files]
    assert {r["hash"] for r in body["results"]} <= set(catalog_rows(deployment.data_dir))
    # nginx's $request_id went upstream: RhinoBox logged the request under the id the client saw.
    assert (await access_line(deployment, request_id))["route"] == "/ingest"


async def test_200_mib_upload_streams_through_nginx(deployment: Deployment) -> None:
    boundary = "rhinobox-nginx-big"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            deployment.url + "/ingest",
            data=stream_multipart(boundary, [("big.bin", BIG_SEED, BIG_SIZE)]),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        result = (await response.json())["results"][0]
    digest = generated_digest(BIG_SEED, BIG_SIZE)
    assert result["hash"] == digest
    assert result["size"] == BIG_SIZE
    assert catalog_rows(deployment.data_dir)[digest] == BIG_SIZE
    # With request buffering off nginx never spooled the body to its own temp files.
    assert "buffered to a temporary file" not in (deployment.nginx_dir / "error.log").read_text()

    # The end of the big blob, by Range, through nginx.
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{deployment.url}/files/{digest}", headers={"Range": f"bytes={BIG_SIZE - 1000}-"}) as response,
    ):
        assert response.status == 206
        assert await response.read() == generated_bytes(BIG_SEED, BIG_SIZE, BIG_SIZE - 1000)


async def test_a_resumable_upload_cut_midway_resumes_through_nginx(deployment: Deployment) -> None:
    """A PATCH cut after 20 MiB: nginx streamed what arrived (no buffering), so the resume starts there."""
    size, seed = 64 * MiB, 201
    tus = {"Tus-Resumable": "1.0.0"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{deployment.url}/uploads/", headers={**tus, "Upload-Length": str(size)}) as created:
            assert created.status == 201, await created.text()
            upload = created.headers["Location"]
        port = int(deployment.url.rsplit(":", 1)[1])
        head = (
            f"PATCH {upload} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + generated_bytes(seed, size, 0, 20 * MiB))
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.transport.abort()  # the link drops mid-PATCH
        del reader
        offset = 0
        for _ in range(50):  # nginx and RhinoBox notice the drop, then the bytes received are the offset
            async with session.head(f"{deployment.url}{upload}", headers=tus) as status:
                offset = int(status.headers["Upload-Offset"])
            if offset > 0:
                break
            await asyncio.sleep(0.1)
        assert 0 < offset <= 20 * MiB
        result: dict[str, object] = {}
        for _ in range(3):  # a 409 names the offset to resume from (the cut request was still ending)
            headers = {**tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
            body = generated_bytes(seed, size, offset)
            async with session.patch(f"{deployment.url}{upload}", data=body, headers=headers) as finished:
                if finished.status == 409:
                    offset = int(finished.headers["Upload-Offset"])
                    continue
                assert finished.status == 204, await finished.text()
                result = json.loads(finished.headers["RhinoBox-Result"])
                break
    assert result["hash"] == generated_digest(seed, size)
    assert catalog_rows(deployment.data_dir)[str(result["hash"])] == size


async def test_download_range_and_304_are_served_by_nginx(deployment: Deployment) -> None:
    name, payload = make_sample("jpeg", 77)
    async with aiohttp.ClientSession() as session:
        async with session.post(deployment.url + "/ingest", data=form([(name, payload)])) as response:
            digest = (await response.json())["results"][0]["hash"]
        url = f"{deployment.url}/files/{digest}"

        async with session.get(url) as response:
            assert response.status == 200
            assert await response.read() == payload
            assert response.headers["ETag"] == f'"{digest}"'
            assert response.headers["Content-Type"] == "image/jpeg"
            assert "immutable" in response.headers["Cache-Control"]
            assert response.headers["Server"].startswith("nginx")
            download_id = response.headers["X-Request-ID"]

        async with session.get(url, headers={"Range": "bytes=10-109"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 10-109/{len(payload)}"
            assert await response.read() == payload[10:110]

        async with session.get(url, headers={"If-None-Match": f'"{digest}"'}) as response:
            assert response.status == 304
            assert await response.read() == b""

        # Asked directly, RhinoBox answers with the redirect and no body: Python sends no blob bytes.
        async with session.get(f"{deployment.upstream}/files/{digest}") as response:
            assert response.status == 200
            assert response.headers["X-Accel-Redirect"] == f"{ACCEL_PREFIX}/{digest[:2]}/{digest}"
            assert await response.read() == b""

        # The internal location is not reachable from outside.
        async with session.get(f"{deployment.url}{ACCEL_PREFIX}/{digest[:2]}/{digest}") as response:
            assert response.status == 404

    logged = await access_line(deployment, download_id)
    assert logged["route"] == "/files/{hash}"
    assert isinstance(logged["bytes_sent"], int)
    assert logged["bytes_sent"] < len(payload)  # headers only; nginx sent the bytes


async def test_nginx_keeps_the_json_error_shape(deployment: Deployment) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(deployment.url + "/files/" + "0" * 64) as response:
            await assert_error(response, 404, "not_found")
        async with session.post(deployment.url + "/ingest", data=b"x", headers={"Content-Type": "text/plain"}) as r:
            await assert_error(r, 415, "not_multipart")
        # Over client_max_body_size: nginx refuses from Content-Length alone, in the same JSON shape.
        async with session.post(
            deployment.url + "/ingest",
            data=b"",
            headers={"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(600 * MiB)},
        ) as response:
            await assert_error(response, 413, "request_too_large")


async def test_security_headers_survive_the_redirect(deployment: Deployment) -> None:
    """nginx drops most headers of a redirecting answer; the config restores the ones that matter."""
    page = b"<!DOCTYPE html><html><head><title>x</title></head><body><script>alert(1)</script></body></html>\n"
    _, image = make_sample("png", 91)
    async with aiohttp.ClientSession() as session:
        async with session.post(deployment.url + "/ingest", data=form([("page.html", page), ("i.png", image)])) as r:
            html_hash, png_hash = (result["hash"] for result in (await r.json())["results"])
        async with session.get(f"{deployment.url}/files/{html_hash}") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            assert response.headers["Content-Security-Policy"] == "sandbox"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        async with session.get(f"{deployment.url}/files/{png_hash}") as response:
            assert response.status == 200
            assert "Content-Security-Policy" not in response.headers  # an empty value adds no header
        async with session.get(f"{deployment.url}/files/{png_hash}?download=1") as response:
            assert response.status == 200
            assert response.headers["Content-Disposition"].startswith('attachment; filename="i.png"')
            assert await response.read() == image
