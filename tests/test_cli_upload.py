"""`rhinobox upload` as a user runs it: a real CLI process against a real server process."""

from __future__ import annotations

import json
import os
import pty
import random
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rhinobox.client.uploader import expand_paths
from tests.helpers import blake3_hex, free_port
from tests.samples import SAMPLES, make_sample
from tests.server_process import CLI_TIMEOUT, RhinoBoxProcess, blob_problems, catalog_rows, run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhinoBoxProcess]:
    with RhinoBoxProcess(tmp_path_factory.mktemp("server") / "data") as process:
        yield process


def upload_json(server: RhinoBoxProcess, *args: str) -> tuple[int, dict[str, Any], str]:
    done = run_cli("upload", "--server", server.url, "--json", *args)
    return done.returncode, json.loads(done.stdout), done.stderr


def mixed_folder(root: Path, seed: int) -> list[Path]:
    """Every sample kind (some in a sub-folder) and a 1 MiB file; returns the files in walk order."""
    top, sub = root, root / "nested"
    sub.mkdir(parents=True)
    kinds = list(SAMPLES)
    for index, kind in enumerate(kinds):
        name, data = make_sample(kind, seed * 100 + index)
        ((top if index % 2 else sub) / name).write_bytes(data)
    # Seeded, so the 1 MiB of noise never starts with bytes libmagic recognises (such as "MZ").
    (top / "large.bin").write_bytes(random.Random(seed).randbytes(1024 * 1024))
    return sorted(p for p in top.iterdir() if p.is_file()) + sorted(sub.iterdir())


def test_a_folder_uploads_then_a_second_run_skips_everything(server: RhinoBoxProcess, tmp_path: Path) -> None:
    files = mixed_folder(tmp_path / "media", seed=1)
    total = sum(p.stat().st_size for p in files)

    code, first, _ = upload_json(server, str(tmp_path / "media"), "--batch-files", "4", "--concurrency", "3")
    assert code == 0
    assert [r["path"] for r in first["results"]] == [str(p) for p in files]
    assert [r["status"] for r in first["results"]] == ["stored"] * len(files)
    assert [r["hash"] for r in first["results"]] == [blake3_hex(p.read_bytes()) for p in files]
    expected_category = {ext: category for _, ext, _, category in SAMPLES.values()}
    for result, path in zip(first["results"], files, strict=True):
        if path.suffix in expected_category:
            assert result["category"] == expected_category[path.suffix]
    assert (first["stored"], first["failed"], first["bytes_sent"], first["bytes_skipped"]) == (len(files), 0, total, 0)
    stored = catalog_rows(server.data_dir)
    assert {r["hash"] for r in first["results"]} <= set(stored)
    assert blob_problems(server.data_dir, [r["hash"] for r in first["results"]]) == []

    code, second, _ = upload_json(server, str(tmp_path / "media"))
    assert code == 0
    assert [r["status"] for r in second["results"]] == ["duplicate"] * len(files)
    assert all(r["skipped"] for r in second["results"])
    assert (second["duplicates"], second["bytes_sent"], second["bytes_skipped"]) == (len(files), 0, total)
    assert [r["hash"] for r in second["results"]] == [r["hash"] for r in first["results"]]

    code, forced, _ = upload_json(server, "--no-skip", str(tmp_path / "media"))
    assert code == 0
    assert [r["status"] for r in forced["results"]] == ["duplicate"] * len(files)
    assert not any(r["skipped"] for r in forced["results"])
    assert forced["bytes_sent"] == total


def test_unreadable_files_fail_clearly_and_the_rest_is_stored(server: RhinoBoxProcess, tmp_path: Path) -> None:
    """Root can read any mode-000 file, so the unreadable inputs here are real failures of other kinds:
    a dangling symbolic link (open fails, ENOENT), a FIFO (not a regular file; opening it would block)
    and a path that does not exist."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = []
    for seed, kind in enumerate(["png", "pdf", "mp4"]):
        name, data = make_sample(kind, 500 + seed)
        (folder / name).write_bytes(data)
        good.append(folder / name)
    (folder / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(folder / "pipe.wav")
    missing = tmp_path / "never-existed.png"

    code, report, stderr = upload_json(server, str(folder), str(missing))
    assert code == 1
    by_name = {Path(r["path"]).name: r for r in report["results"]}
    assert by_name["broken.jpg"]["error"]["code"] == "local_unreadable"
    assert "gone.jpg" in by_name["broken.jpg"]["error"]["message"]
    assert by_name["pipe.wav"]["error"]["code"] == "local_not_regular_file"
    assert by_name["never-existed.png"]["error"]["code"] == "local_not_found"
    assert [by_name[p.name]["status"] for p in good] == ["stored"] * 3
    assert report["failed"] == 3
    assert set(catalog_rows(server.data_dir)) >= {blake3_hex(p.read_bytes()) for p in good}
    assert "local_unreadable" in stderr
    assert "local_not_regular_file" in stderr

    plain = run_cli("upload", "--server", server.url, str(folder))
    assert plain.returncode == 1
    assert "upload summary" in plain.stdout
    assert "FAILED" in plain.stdout
    assert "broken.jpg: local_unreadable" in plain.stdout


def test_files_and_globs_keep_the_order_given(server: RhinoBoxProcess, tmp_path: Path) -> None:
    folder = tmp_path / "g"
    folder.mkdir()
    names = []
    for seed in range(4):
        name, data = make_sample("gif", 900 + seed)
        (folder / name).write_bytes(data)
        names.append(name)
    text_name, text = make_sample("text", 950)
    (folder / text_name).write_bytes(text)
    args = [str(folder / text_name), str(folder / "gif-*.gif"), str(folder / names[0])]  # names[0] twice
    code, report, _ = upload_json(server, *args, "--category", "Party Pics", "--batch-files", "1")
    assert code == 0
    assert [Path(r["path"]).name for r in report["results"]] == [text_name, *sorted(names)]
    assert all(r["category"].endswith("/party-pics") for r in report["results"])  # the hint, sanitised


def test_an_unreachable_server_fails_every_file(tmp_path: Path) -> None:
    port = free_port()
    name, data = make_sample("png", 7)
    (tmp_path / name).write_bytes(data)
    done = run_cli("upload", "--server", f"http://127.0.0.1:{port}", "--retries", "1", "--json", str(tmp_path / name))
    assert done.returncode == 1
    result = json.loads(done.stdout)["results"][0]
    assert result["status"] == "error"
    assert result["error"]["code"] == "connection_failed"


def run_in_pty(args: list[str], timeout: float = CLI_TIMEOUT) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; returns (exit status, everything shown)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(args, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        status = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        os.close(leader)
    return status, b"".join(chunks).decode("utf-8", errors="replace")


def test_progress_is_shown_on_a_terminal_and_not_in_a_pipe(server: RhinoBoxProcess, tmp_path: Path) -> None:
    mixed_folder(tmp_path / "tty", seed=7)
    status, screen = run_in_pty(
        [sys.executable, "-m", "rhinobox", "upload", "--server", server.url, str(tmp_path / "tty")]
    )
    assert status == 0, screen
    assert "uploading" in screen
    assert "hashing" in screen
    assert "13/13 files" in screen
    assert "MiB" in screen  # bytes done / total
    assert "\x1b[" in screen  # the live display redraws with terminal control sequences
    assert "upload summary" in screen
    assert "bytes skipped" in screen

    mixed_folder(tmp_path / "pipe", seed=8)
    piped = run_cli("upload", "--server", server.url, str(tmp_path / "pipe"))
    assert piped.returncode == 0
    assert "uploading" not in piped.stdout
    assert "\x1b[" not in piped.stdout
    assert "upload summary" in piped.stdout


def test_paths_expand_in_the_order_given(tmp_path: Path) -> None:
    (tmp_path / "d" / "b").mkdir(parents=True)
    for name in ["d/z.txt", "d/a.txt", "d/b/c.txt", "x.png", "y.png"]:
        (tmp_path / name).write_text(name)
    given = [str(tmp_path / "y.png"), str(tmp_path / "d"), str(tmp_path / "*.png"), str(tmp_path / "*.nope")]
    found = [(path.relative_to(tmp_path).as_posix(), shown) for path, shown in expand_paths(given)]
    assert [path for path, _ in found] == ["y.png", "d/a.txt", "d/z.txt", "d/b/c.txt", "x.png", "*.nope"]
    assert found[-1][1] == str(tmp_path / "*.nope")  # kept, so that it fails visibly (local_not_found)
