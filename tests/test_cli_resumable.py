"""`rhinobox upload` sends large files by resumable upload, and a second run resumes what the first left."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from rhinobox.client.resumable import UploadUrls
from tests.helpers import blake3_hex
from tests.server_process import RhinoBoxProcess, run_cli

MIB: Final = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RhinoBoxProcess]:
    with RhinoBoxProcess(tmp_path / "data") as process:
        yield process


def upload(server: RhinoBoxProcess, state_home: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "XDG_STATE_HOME": str(state_home), "NO_COLOR": "1"}
    env.pop("RHINOBOX_TOKEN", None)
    done = run_cli("upload", "--server", server.url, "--json", "--resumable-mb", "1", *args, env=env)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def request(method: str, url: str, data: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers={"Tus-Resumable": "1.0.0", **headers})
    with urllib.request.urlopen(req) as response:
        return response.status, dict(response.headers), response.read()


def test_large_files_go_resumably_and_small_ones_in_batches(server: RhinoBoxProcess, tmp_path: Path) -> None:
    big, small = tmp_path / "big.mov", tmp_path / "small.txt"
    big.write_bytes(os.urandom(3 * MIB + 11))
    small.write_bytes(b"hello resumable world\n")
    answer = upload(server, tmp_path / "state", str(big), str(small))
    assert [r["status"] for r in answer["results"]] == ["stored", "stored"]
    assert answer["results"][0]["hash"] == blake3_hex(big.read_bytes())
    records = [json.loads(p.read_text()) for p in (server.data_dir / "uploads").glob("*.json")]
    assert [r["result"]["hash"] for r in records] == [blake3_hex(big.read_bytes())]  # only the big one
    assert records[0]["metadata"]["filename"] == "big.mov"


def test_a_second_run_resumes_the_upload_the_first_left(server: RhinoBoxProcess, tmp_path: Path) -> None:
    big = tmp_path / "long.mp4"
    data = os.urandom(4 * MIB)
    big.write_bytes(data)
    digest = blake3_hex(data)
    # What a run cut after two MiB leaves: an upload on the server and its URL remembered.
    status, headers, _ = request("POST", f"{server.url}/uploads/", None, **{"Upload-Length": str(len(data))})
    assert status == 201
    url = headers["Location"]
    patch_headers = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    request("PATCH", f"{server.url}{url}", data[: 2 * MIB], **patch_headers)
    state = tmp_path / "state"
    UploadUrls(state / "rhinobox" / "uploads.json").put(UploadUrls.key(server.url, big, digest), url)

    answer = upload(server, state, str(big))
    assert answer["results"][0]["status"] == "stored"
    assert answer["results"][0]["hash"] == digest
    _, _, body = request("GET", f"{server.url}{url}")
    resumed = json.loads(body)
    assert resumed["complete"] is True  # the remembered upload was finished, not a new one started
    assert resumed["result"]["hash"] == digest
    assert UploadUrls(state / "rhinobox" / "uploads.json").get(UploadUrls.key(server.url, big, digest)) is None
