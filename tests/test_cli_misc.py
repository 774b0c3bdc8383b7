"""`rhinobox download`, `ls` and `stats` (and `--token`) as real CLI processes against a real server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import blake3_hex
from tests.samples import make_sample
from tests.server_process import RhinoBoxProcess, run_cli

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhinoBoxProcess]:
    with RhinoBoxProcess(tmp_path_factory.mktemp("misc") / "data") as process:
        yield process


def upload(server: RhinoBoxProcess, *paths: Path, token: str | None = None) -> list[dict[str, object]]:
    done = run_cli("upload", "--server", server.url, "--json", *map(str, paths), token=token)
    assert done.returncode == 0, done.stderr
    results: list[dict[str, object]] = json.loads(done.stdout)["results"]
    return results


def test_download_writes_the_file_and_resumes_a_partial_one(server: RhinoBoxProcess, tmp_path: Path) -> None:
    source = tmp_path / "clip.bin"
    source.write_bytes(os.urandom(600_000))
    digest = blake3_hex(source.read_bytes())
    upload(server, source)

    out = tmp_path / "out"
    out.mkdir()
    default = run_cli("download", digest, "--server", server.url, cwd=out)
    assert default.returncode == 0, default.stderr
    assert (out / digest).read_bytes() == source.read_bytes()

    # A partial download whose first bytes are wrong shows that only the tail was fetched (Range):
    # the result fails the hash check, and the broken partial file is removed.
    (out / "x.bin.part").write_bytes(b"\0" * 250_000)
    broken = run_cli("download", digest, "-o", str(out / "x.bin"), "--server", server.url)
    assert broken.returncode == 1
    assert "hash" in broken.stderr
    assert not (out / "x.bin").exists()
    assert not (out / "x.bin.part").exists()

    (out / "y.bin.part").write_bytes(source.read_bytes()[:250_000])
    resumed = run_cli("download", digest, "-o", str(out / "y.bin"), "--server", server.url)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "y.bin").read_bytes() == source.read_bytes()
    assert not (out / "y.bin.part").exists()


@pytest.mark.parametrize(
    ("digest", "code"),
    [("not-a-hash", "bad_hash"), ("0" * 64, "not_found")],
)
def test_download_errors_name_their_code(server: RhinoBoxProcess, tmp_path: Path, digest: str, code: str) -> None:
    done = run_cli("download", digest, "-o", str(tmp_path / "f"), "--server", server.url)
    assert done.returncode == 1
    assert code in done.stderr
    assert not (tmp_path / "f").exists()
    assert not (tmp_path / "f.part").exists()


def test_ls_and_stats(server: RhinoBoxProcess, tmp_path: Path) -> None:
    files = []
    for seed, kind in enumerate(["png", "gif", "pdf"]):
        name, data = make_sample(kind, 3000 + seed)
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    upload(server, *files)
    digests = {blake3_hex(p.read_bytes()): p.name for p in files}

    listing = run_cli("ls", "--server", server.url, "--category", "images", "--limit", "1000")
    assert listing.returncode == 0, listing.stderr
    rows = [line.split("\t") for line in listing.stdout.splitlines()]
    png, gif = (blake3_hex(p.read_bytes()) for p in files[:2])
    assert {png, gif} <= {row[0] for row in rows}
    assert all(row[3].startswith("images/") for row in rows)
    assert {row[4] for row in rows if row[0] in digests} == {files[0].name, files[1].name}

    as_json = json.loads(run_cli("ls", "--server", server.url, "--json", "--name", files[2].name).stdout)
    assert [f["hash"] for f in as_json["files"]] == [blake3_hex(files[2].read_bytes())]

    stats = run_cli("stats", "--server", server.url, "--json")
    assert stats.returncode == 0, stats.stderr
    body = json.loads(stats.stdout)
    assert body["blobs"] >= 3
    assert body["categories"]["documents/pdf"]["blobs"] >= 1
    human = run_cli("stats", "--server", server.url)
    assert "saved by deduplication" in human.stdout
    assert "documents/pdf" in human.stdout


def test_token_is_sent_and_a_refusal_is_reported(tmp_path: Path) -> None:
    name, data = make_sample("jpeg", 4242)
    (tmp_path / name).write_bytes(data)
    with RhinoBoxProcess(tmp_path / "data", RHINOBOX_API_TOKENS=TOKEN) as secured:
        refused = run_cli("upload", "--server", secured.url, "--json", str(tmp_path / name))
        results = upload(secured, tmp_path / name, token=TOKEN)
        stats = run_cli("stats", "--server", secured.url, "--token", TOKEN, "--json")
        no_stats = run_cli("stats", "--server", secured.url)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["results"][0]["error"]["code"] == "unauthorized"
    assert results[0]["status"] == "stored"
    assert json.loads(stats.stdout)["blobs"] == 1
    assert no_stats.returncode == 1
    assert "unauthorized" in no_stats.stderr
