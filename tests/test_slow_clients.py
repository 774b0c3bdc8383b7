"""Slow clients over real sockets: headers have a deadline, upload bodies an idle limit and a minimum rate."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rhinobox.app import create_app
from rhinobox.http.keys import PIPELINE
from tests.helpers import (
    AiohttpClient,
    Client,
    blob_files,
    make_settings,
    send_partial_upload,
    spool_files,
    wait_until,
)
from tests.server_process import RhinoBoxProcess

HEADER_TIMEOUT = 1.0
TRICKLE_LIMIT = 15.0  # seconds a trickling client keeps going if nobody cuts it off (the deadline is 1 s)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhinoBoxProcess]:
    data_dir = tmp_path_factory.mktemp("slow-clients") / "data"
    env = {
        "RHINOBOX_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "RHINOBOX_BODY_TIMEOUT": "1",
        "RHINOBOX_BODY_MIN_RATE": "4096",
    }
    with RhinoBoxProcess(data_dir, **env) as process:
        yield process


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=TRICKLE_LIMIT)


def trickle(sock: socket.socket, data: bytes, pause: float) -> bool:
    """Send `data` a byte at a time; False once the server answered or closed (or TRICKLE_LIMIT passed)."""
    deadline = time.monotonic() + TRICKLE_LIMIT
    for byte in data:
        if time.monotonic() > deadline or select.select([sock], [], [], 0)[0]:
            return False
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return False
        time.sleep(pause)
    return True


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return answer


def split_answer(answer: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.lower(), body


def read_one_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response (status, body), read by its Content-Length: not waiting for the connection to close
    (after an error the server reads and drops the rest of a body for up to 10 s before closing)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), body


def test_a_client_trickling_its_headers_gets_a_json_408_and_is_closed(server: RhinoBoxProcess) -> None:
    with connect(server.url) as sock:
        finished = trickle(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 200 + b"\r\n\r\n", 0.05)
        answer = read_answer(sock)
    assert not finished  # cut off long before the 200-odd bytes at 20 a second were sent
    status, head, body = split_answer(answer)
    assert status == 408
    assert b"content-type: application/json" in head
    assert json.loads(body)["error"]["code"] == "header_timeout"
    assert "no complete headers" in Path(server.log_path).read_text(errors="replace")


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: RhinoBoxProcess) -> None:
    with connect(server.url) as sock:
        assert read_answer(sock) == b""


def test_a_kept_alive_connection_counts_the_deadline_from_the_next_request(server: RhinoBoxProcess) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(server.url) as sock:
        sock.sendall(request)
        assert read_one_response(sock)[0] == 200
        time.sleep(2 * HEADER_TIMEOUT)  # idle between requests: the keep-alive timeout's business
        sock.sendall(request)
        assert read_one_response(sock)[0] == 200
        assert not trickle(sock, request.replace(b"Host: x", b"Host: " + b"y" * 200), 0.05)
        status, _, body = split_answer(read_answer(sock))
    assert status == 408
    assert json.loads(body)["error"]["code"] == "header_timeout"


def test_a_body_below_the_minimum_rate_is_cut_off_and_nothing_is_left(server: RhinoBoxProcess) -> None:
    boundary = b"slowbody"
    head = (
        b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: 10000000\r\n\r\n"
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n\r\n'
    )
    with connect(server.url) as sock:
        sock.sendall(head + b"b" * (2 * 1024 * 1024))  # past the small-file arena: spooled to disk
        # 400 bytes a second never idles for the 1 s limit, but stays under the minimum of 4096 a second.
        assert not trickle(sock, b"t" * 10_000, 1 / 400)
        status, body = read_one_response(sock)
    assert status == 408
    error = json.loads(body)["error"]
    assert error["code"] == "upload_timeout"
    assert "below the minimum of 4096" in error["message"]
    assert spool_files(server.data_dir) == []
    assert blob_files(server.data_dir) == {}


async def test_a_trickled_small_file_releases_its_arena(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client: Client = await aiohttp_client(create_app(make_settings(data_dir, body_timeout="1", body_min_rate="4096")))
    arenas = client.app[PIPELINE].resources.arenas
    reader, writer = await send_partial_upload(
        client.server.host, client.server.port, [("small.bin", b"s" * 1000)], declared_length=100_000
    )
    assert await wait_until(lambda: arenas.available == arenas.limit - 1, 5)  # the small file holds one arena
    answer = asyncio.ensure_future(reader.readuntil(b"}}"))  # the JSON error's end, not the connection's
    for _ in range(int(TRICKLE_LIMIT * 20)):  # 20 bytes a second: never idle for 1 s, far below 4096/s
        if answer.done():
            break
        writer.write(b"t")
        await asyncio.sleep(0.05)
    status, _, body = split_answer(await asyncio.wait_for(answer, TRICKLE_LIMIT))
    writer.close()
    assert status == 408
    assert json.loads(body)["error"]["code"] == "upload_timeout"
    assert arenas.available == arenas.limit
    assert spool_files(data_dir) == []


async def test_a_body_at_a_good_rate_with_pauses_is_stored(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client: Client = await aiohttp_client(create_app(make_settings(data_dir, body_timeout="1", body_min_rate="4096")))
    payload = b"p" * (64 * 1024)
    boundary = "goodpace"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="p.bin"\r\n\r\n'.encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def paced() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):  # 8 KiB every 0.3 s: about 27 KB/s, with 0.3 s pauses
            yield body[start : start + 8192]
            await asyncio.sleep(0.3)

    response = await client.post(
        "/ingest", data=paced(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["results"][0]["status"] == "stored"
