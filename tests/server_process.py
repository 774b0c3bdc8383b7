"""Run the real server as a subprocess (`python -m rhinobox serve`) on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import blake3

__all__ = [
    "CLI_TIMEOUT",
    "RhinoBoxProcess",
    "blob_problems",
    "catalog_rows",
    "generated_bytes",
    "generated_digest",
    "run_cli",
    "server_env",
    "stream_multipart",
]

_BANNER = re.compile(rb"listening on (http://[^\s]+)")
START_TIMEOUT = 30.0
CLI_TIMEOUT: Final = 60.0


def server_env(data_dir: Path, **env: str) -> dict[str, str]:
    """The caller's environment for `rhinobox serve` on `data_dir` at a free loopback port, plus `env`."""
    # One serving process unless a test asks for more: most tests look at one process's behaviour;
    # tests/test_processes*.py start groups, the default (one per core) among them.
    return {
        **os.environ,
        "RHINOBOX_PROCESSES": "1",
        "RHINOBOX_DATA_DIR": str(data_dir),
        "RHINOBOX_ADDR": "127.0.0.1:0",
        **env,
    }


def run_cli(
    *args: str, cwd: Path | None = None, token: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m rhinobox ARGS` run to its end, its output captured as text.

    `env` replaces the environment; by default it is the caller's without colours, with `token` as the
    only API token (none when None).
    """
    if env is None:
        env = {name: value for name, value in os.environ.items() if name != "RHINOBOX_TOKEN"} | {"NO_COLOR": "1"}
        if token is not None:
            env = {**env, "RHINOBOX_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "rhinobox", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=cwd,
        env=env,
        check=False,
    )


class RhinoBoxProcess:
    """A server process; `url` is known once it has printed its banner. Use as a context manager.

    `wrapper` goes before the command (`fiu-run -x`, say); it must exec the server, keeping its pid.
    """

    def __init__(self, data_dir: Path, *, wrapper: Sequence[str] = (), **env: str) -> None:
        self.data_dir = data_dir
        self.wrapper = tuple(wrapper)
        self.env = server_env(data_dir, **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self) -> RhinoBoxProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "rhinobox", "serve"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            match = _BANNER.search(line)
            if match:
                self.url = match.group(1).decode()
                return self
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"server did not start: {line!r}; log: {self.log_path.read_text(errors='replace')}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> RhinoBoxProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


# -- Driving a real server with large streamed uploads, and checking its data dir from outside --------

STREAM_CHUNK = 1024 * 1024


def generated_bytes(seed: int, size: int, offset: int = 0, length: int | None = None) -> bytes:
    """Deterministic pseudo-random content (BLAKE3 XOF): any slice of a file of any size, made on demand."""
    want = size - offset if length is None else min(length, size - offset)
    return blake3.blake3(seed.to_bytes(8, "big")).digest(length=want, seek=offset)


def generated_digest(seed: int, size: int) -> str:
    hasher = blake3.blake3()
    for offset in range(0, size, STREAM_CHUNK):
        hasher.update(generated_bytes(seed, size, offset, STREAM_CHUNK))
    return hasher.hexdigest()


async def stream_multipart(
    boundary: str,
    files: list[tuple[str, int, int]],
    after_file: Callable[[int], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """A multipart body of generated files (name, seed, size), streamed a chunk at a time, never held whole.

    `after_file(i)` is awaited once file i has been sent (to pause, or to act mid-request).
    """
    for index, (name, seed, size) in enumerate(files):
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for offset in range(0, size, STREAM_CHUNK):
            yield generated_bytes(seed, size, offset, STREAM_CHUNK)
        yield b"\r\n"
        if after_file is not None:
            await after_file(index)
    yield f"--{boundary}--\r\n".encode()


def catalog_rows(data_dir: Path) -> dict[str, int]:
    """digest -> size of every blob row, read straight from the SQLite file (not through RhinoBox)."""
    path = data_dir / "catalog.sqlite3"
    assert path.exists(), f"no catalog in {data_dir}"
    # Read-write mode although it only reads: a read-only connection would leave -wal/-shm files behind.
    db = sqlite3.connect(path)
    try:
        return {digest: size for digest, size in db.execute("SELECT hash, size FROM blobs")}
    finally:
        db.close()


def blob_problems(data_dir: Path, digests: Iterable[str]) -> list[str]:
    """Digests whose blob file is missing or does not hash to its name."""
    problems = []
    for digest in digests:
        path = data_dir / "blobs" / digest[:2] / digest
        if not path.exists():
            problems.append(f"missing {digest}")
            continue
        hasher = blake3.blake3()
        with open(path, "rb") as blob:
            while chunk := blob.read(STREAM_CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != digest:
            problems.append(f"corrupt {digest}")
    return problems
