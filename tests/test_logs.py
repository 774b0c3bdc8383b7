"""Structured logs: one JSON object per line, request ids in logs and `X-Request-ID`, level from settings."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from rhinobox.logs import current_request_id, setup_logging
from tests.helpers import assert_error, form
from tests.samples import make_sample
from tests.server_process import RhinoBoxProcess


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored afterwards (setup_logging replaces its handlers and level)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_are_json_lines_with_extra_fields_and_request_id(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    log = logging.getLogger("rhinobox.test")
    log.info("plain %s", "message", extra={"files": 3})
    token = current_request_id.set("req-42")
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("it failed")
    finally:
        current_request_id.reset(token)
    log.debug("not at info")
    first, second = lines_of(stream)
    assert first["msg"] == "plain message"
    assert first["level"] == "info"
    assert first["logger"] == "rhinobox.test"
    assert first["files"] == 3
    assert "request_id" not in first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["level"] == "error"
    assert second["request_id"] == "req-42"
    assert "ValueError: boom" in second["exc"]


@pytest.mark.parametrize("breaker", ["\u2028", "\u2029", "\x85", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1e"])
def test_line_breaking_code_points_never_split_a_record(root_logger: logging.Logger, breaker: str) -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    path = f"/files/a{breaker}b"
    logging.getLogger("rhinobox.access").info("GET %s", path, extra={"fields": {"path": path, "name": "café"}})
    text = stream.getvalue()
    assert len(text.splitlines()) == 1
    assert breaker not in text.removesuffix("\n")  # the handler's own terminator ends the line
    (line,) = lines_of(stream)
    assert (line["msg"], line["path"], line["name"]) == (f"GET {path}", path, "café")
    assert "café" in text  # other non-ASCII text stays readable


def test_level_setting_filters(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    setup_logging("warning", stream)
    logging.getLogger("rhinobox.access").info("GET / 200")
    logging.getLogger("rhinobox").warning("disk is filling up")
    assert [line["msg"] for line in lines_of(stream)] == ["disk is filling up"]


async def test_real_server_logs_json_access_lines_with_request_ids(tmp_path: Path) -> None:
    with RhinoBoxProcess(tmp_path / "data", RHINOBOX_LOG_LEVEL="info") as server:
        async with aiohttp.ClientSession(server.url) as session:
            async with session.get("/healthz", headers={"X-Request-ID": "from-nginx-1"}) as response:
                assert response.status == 200
                assert response.headers["X-Request-ID"] == "from-nginx-1"
            _, payload = make_sample("png", 1)
            async with session.post("/ingest", data=form([("a.png", payload)])) as response:
                assert response.status == 200
                ingest_id = response.headers["X-Request-ID"]
                assert re.fullmatch(r"[0-9a-f]{32}", ingest_id)
            # An id that could forge log content is replaced, not echoed.
            async with session.get("/nope", headers={"X-Request-ID": 'x y"z'}) as response:
                await assert_error(response, 404, "not_found")
                bad_id = response.headers["X-Request-ID"]
                assert bad_id != 'x y"z'
            # Code points that line-splitting tools take as line breaks stay inside one line.
            async with session.get("/nope/a%E2%80%A8b%C2%85c%E2%80%A9d") as response:
                assert response.status == 404
                breaks_id = response.headers["X-Request-ID"]
        # A malformed request is answered by aiohttp before routing: still one clean access line.
        address = urlsplit(server.url)
        with socket.create_connection((address.hostname, address.port)) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert re.match(rb"HTTP/1\.[01] 400 ", raw.recv(100))
        assert server.stop() == 0
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines()]  # every line is JSON
    access = {line["request_id"]: line for line in lines if line["logger"] == "rhinobox.access"}
    assert access["from-nginx-1"]["route"] == "/healthz"
    assert access["from-nginx-1"]["status"] == 200
    assert access[ingest_id]["method"] == "POST"
    assert access[ingest_id]["route"] == "/ingest"
    assert access[ingest_id]["bytes_received"] > len(payload)
    assert access[ingest_id]["bytes_sent"] > 0
    assert access[ingest_id]["duration_ms"] >= 0
    assert access[bad_id]["status"] == 404
    assert access[breaks_id]["path"] == "/nope/a\u2028b\x85c\u2029d"
    assert access[bad_id]["route"] == "unmatched"
    assert any(line["status"] == 400 and line["route"] == "unmatched" for line in access.values())
    assert not [line for line in lines if line["level"] == "error"]
    messages = [line["msg"] for line in lines]
    assert any(m.startswith("shutdown complete") for m in messages)
