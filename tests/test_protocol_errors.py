"""Requests aiohttp's parser refuses, sent over a raw socket to a real server: JSON errors, no tracebacks."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.server_process import RhinoBoxProcess

ECHO_MARK = b"ECHO-ME-NOT"
BAD_REQUESTS: dict[str, bytes] = {
    "duplicate content-length": b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "content-length and chunked": (
        b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "bad chunk size": b"POST /ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + ECHO_MARK + b"\r\n",
    "header over 8190 bytes": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + ECHO_MARK * 1000 + b"\r\n\r\n",
    "url over 8190 bytes": b"GET /" + ECHO_MARK * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "control byte in a header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01" + ECHO_MARK + b"\r\n\r\n",
    "too many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    + b"\r\n",
    "http/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bogus expect": b"POST /ingest HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\nContent-Length: 5\r\n\r\nhello",
}

# Where no HTTP answer is possible, the connection is closed (none today).
CLOSED_WITHOUT_ANSWER: frozenset[str] = frozenset()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhinoBoxProcess]:
    with RhinoBoxProcess(tmp_path_factory.mktemp("protocol") / "data") as process:
        yield process


def exchange(url: str, raw: bytes) -> bytes:
    """Send `raw`, read until the server closes the connection (or 10 s pass)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


@pytest.mark.parametrize("kind", sorted(BAD_REQUESTS))
def test_a_malformed_request_gets_a_json_error_and_no_echo(server: RhinoBoxProcess, kind: str) -> None:
    answer = exchange(server.url, BAD_REQUESTS[kind])
    if kind in CLOSED_WITHOUT_ANSWER:
        assert answer == b""
        return
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500 or status == 501, head
    assert b"content-type: application/json" in head.lower(), head
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"}
    assert ECHO_MARK not in answer


def test_malformed_requests_are_logged_as_one_warning_each_without_traceback(server: RhinoBoxProcess) -> None:
    for raw in BAD_REQUESTS.values():
        exchange(server.url, raw)
    log_text = Path(server.log_path).read_text(errors="replace")
    assert "Traceback" not in log_text
    assert "refused a malformed request" in log_text
    assert ECHO_MARK.decode() not in log_text


def test_the_server_keeps_serving(server: RhinoBoxProcess) -> None:
    answer = exchange(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
