"""A kept-alive connection whose next request stops half-way through its head is cut off at the header deadline.

Over real sockets to a real server: the next request's first bytes may come after the answer, in the same
read as the request before (pipelined, after a body of either framing), or while that request is still
being answered; in every case the client gets a JSON 408 `header_timeout` about `HEADER_TIMEOUT` later,
never the hour of aiohttp's keep-alive timeout. A connection that ends each read on a request's last
byte is idle, not late: it still serves after twice the deadline.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.server_process import RhinoBoxProcess
from tests.test_slow_clients import connect, read_answer, split_answer, trickle

HEADER_TIMEOUT = 1.0
CUT_OFF_WITHIN = HEADER_TIMEOUT + 1.5  # the deadline, plus scheduling slack on a loaded test machine
IDLE = 2 * HEADER_TIMEOUT  # idle between requests: the keep-alive timeout's business, not the deadline's
DOWNLOAD_SIZE = 32 * 1024 * 1024  # more than loopback socket buffers hold: its answer waits for the reader

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: "  # a request line and half its headers
_FORM = b'--kp\r\nContent-Disposition: form-data; name="files"; filename="note.txt"\r\n\r\nkept alive\r\n--kp--\r\n'
_POST_HEAD = b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=kp\r\n"
POST_SIZED = _POST_HEAD + b"Content-Length: %d\r\n\r\n" % len(_FORM) + _FORM
POST_CHUNKED = _POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(_FORM) + _FORM + b"\r\n0\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhinoBoxProcess]:
    data_dir = tmp_path_factory.mktemp("keepalive-partial") / "data"
    with RhinoBoxProcess(data_dir, RHINOBOX_HEADER_TIMEOUT=str(HEADER_TIMEOUT)) as process:
        yield process


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response (status, body), read by its Content-Length, leaving the connection open."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(1024 * 1024)
        assert chunk, "the connection closed inside a response"
        body += chunk
    return int(head.split(b" ", 2)[1]), bytes(body)


def assert_header_timeout(sock: socket.socket, since: float) -> None:
    """The server answers a JSON 408 `header_timeout` and closes, within about the deadline of `since`."""
    answer = read_answer(sock)  # until the server closes (the socket's own timeout is far longer)
    elapsed = time.monotonic() - since
    assert HEADER_TIMEOUT - 0.2 < elapsed < CUT_OFF_WITHIN, f"cut off after {elapsed:.2f} s"
    status, head, body = split_answer(answer)
    assert status == 408
    assert b"content-type: application/json" in head
    assert json.loads(body)["error"]["code"] == "header_timeout"


def test_a_half_sent_next_request_after_an_answer_gets_a_408(server: RhinoBoxProcess) -> None:
    with connect(server.url) as sock:
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
        sock.sendall(PARTIAL)
        assert_header_timeout(sock, time.monotonic())


def test_a_half_sent_next_request_that_trickles_is_cut_off(server: RhinoBoxProcess) -> None:
    with connect(server.url) as sock:
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        sock.sendall(PARTIAL)
        assert not trickle(sock, b"y" * 200 + b"\r\n\r\n", 0.2)  # 5 bytes a second, each one in time
        assert_header_timeout(sock, started)


@pytest.mark.parametrize("first", [GET, POST_SIZED, POST_CHUNKED], ids=["no-body", "content-length", "chunked"])
def test_a_half_request_in_the_same_read_as_the_one_before_gets_a_408(server: RhinoBoxProcess, first: bytes) -> None:
    with connect(server.url) as sock:
        started = time.monotonic()
        sock.sendall(first + PARTIAL)  # one segment: the parser sees a request end and the next begin
        assert read_response(sock)[0] == 200
        assert_header_timeout(sock, started)


async def test_a_half_request_sent_while_the_one_before_is_answered_gets_a_408(server: RhinoBoxProcess) -> None:
    data = random.Random(7).randbytes(DOWNLOAD_SIZE)
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("files", data, filename="big.bin")
        async with session.post(server.url + "/ingest", data=form) as response:
            digest = (await response.json())["results"][0]["hash"]
    with connect(server.url) as sock:
        sock.sendall(f"GET /files/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.2)  # the download has filled the socket buffers and waits for this reader
        started = time.monotonic()
        sock.sendall(PARTIAL)
        time.sleep(HEADER_TIMEOUT + 0.3)  # past the deadline while the answer before is still being sent
        status, body = read_response(sock)
        assert status == 200
        assert body == data
        answer = read_answer(sock)
    elapsed = time.monotonic() - started
    assert elapsed < 2 * HEADER_TIMEOUT + 1.5, f"cut off after {elapsed:.2f} s"  # counted again once it is free
    status, _, error = split_answer(answer)
    assert status == 408
    assert json.loads(error)["error"]["code"] == "header_timeout"


@pytest.mark.parametrize(
    "requests", [GET, POST_SIZED, POST_CHUNKED, GET + GET], ids=["no-body", "content-length", "chunked", "pipelined"]
)
def test_a_connection_idle_after_whole_requests_keeps_serving(server: RhinoBoxProcess, requests: bytes) -> None:
    with connect(server.url) as sock:
        sock.sendall(requests)
        for _ in range(requests.count(b" HTTP/1.1\r\n")):
            assert read_response(sock)[0] == 200
        time.sleep(IDLE)
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
