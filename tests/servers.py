"""Real PostgreSQL and OpenStack Swift (s3api) for the tests: started once per session, stopped after.

They run through the same scripts developers use (scripts/postgres.sh, scripts/swift.sh). Each
test gets a fresh database (`postgres_dsn`) or a fresh key prefix in the bucket (`s3_overrides`),
so tests never see each other's rows or objects. Registered from conftest.py as a pytest plugin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import pytest

__all__ = ["PostgresServer", "SwiftServer", "postgres_dsn", "postgres_server", "s3_overrides", "swift_server"]

SCRIPTS: Final = Path(__file__).resolve().parent.parent / "scripts"
START_TIMEOUT_S: Final = 120


def _run_script(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(SCRIPTS / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _settings_lines(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if line.startswith("RHINOBOX_"))


@dataclass
class PostgresServer:
    """A private cluster; `new_database` makes an empty database and returns its URL."""

    directory: Path
    url: str

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        parts = urlsplit(self.url)
        admin = urlunsplit(parts._replace(path="/postgres"))
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
        return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class SwiftServer:
    """A private Swift proxy with one bucket; `env` holds the RHINOBOX_* settings that reach it."""

    directory: Path
    env: dict[str, str]

    @property
    def bucket(self) -> str:
        return urlsplit(self.env["RHINOBOX_BLOBS"]).netloc

    def overrides(self, prefix: str) -> dict[str, str]:
        """Settings overrides (field names, as `make_settings` takes them) for blobs under `prefix`."""
        return {
            "blobs": f"s3://{self.bucket}/{prefix}",
            "s3_endpoint": self.env["RHINOBOX_S3_ENDPOINT"],
            "s3_region": self.env["RHINOBOX_S3_REGION"],
            "s3_access_key": self.env["RHINOBOX_S3_ACCESS_KEY"],
            "s3_secret_key": self.env["RHINOBOX_S3_SECRET_KEY"],
        }


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # Not under pytest's tmp dirs: those are private to root, and the server runs as `postgres`.
    directory = Path(tempfile.mkdtemp(prefix="rhinobox-pg-"))
    try:
        output = _run_script("postgres.sh", "start", str(directory), env={"PG_FAST": "1"})
        yield PostgresServer(directory, _settings_lines(output)["RHINOBOX_CATALOG"])
    finally:
        try:
            _run_script("postgres.sh", "stop", str(directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def swift_server() -> Iterator[SwiftServer]:
    directory = Path(tempfile.mkdtemp(prefix="rhinobox-swift-"))
    try:
        output = _run_script("swift.sh", "start", str(directory))
        yield SwiftServer(directory, _settings_lines(output))
    finally:
        try:
            _run_script("swift.sh", "stop", str(directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A `postgresql://` URL of a new, empty database."""
    return postgres_server.new_database()


@pytest.fixture
def s3_overrides(swift_server: SwiftServer) -> dict[str, str]:
    """Settings overrides for a blob store under a prefix of its own."""
    return swift_server.overrides("t-" + uuid.uuid4().hex[:12])
