"""Every tunable of RhinoBox, as data: one frozen `Settings` built from `RHINOBOX_*` variables and flags.

A setting is declared once in `SETTINGS` (name, default, help, parser); the environment, the CLI and
docs/configuration.md all derive from that table, and a bad value fails at start naming its variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Final

__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "FsyncMode",
    "SettingSpec",
    "Settings",
    "SettingsError",
]

ENV_PREFIX: Final = "RHINOBOX_"
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A setting had a value that cannot be used; the message names the variable."""


class FsyncMode(StrEnum):
    """What a successful answer promises about the bytes (see docs/configuration.md)."""

    ALWAYS = "always"
    NEVER = "never"


def _parse_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip().replace("_", ""))
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"must be {bound}, got {value}")
        return value

    return parse


def _parse_float(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _parse_addr(raw: str) -> tuple[str, int]:
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be HOST:PORT, got {raw!r}")
    host = host.strip("[]")
    port_number = int(port)
    if not 0 <= port_number <= 65535:
        raise ValueError(f"port must be 0-65535, got {port_number}")
    return host, port_number


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _parse_fsync(raw: str) -> FsyncMode:
    return FsyncMode(_parse_choice(tuple(m.value for m in FsyncMode))(raw))


def _parse_path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Path(raw).expanduser()


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_tokens(raw: str) -> tuple[str, ...]:
    return tuple(token.strip() for token in raw.split(",") if token.strip())


def _default_workers() -> int:
    return max(2, (os.cpu_count() or 1) * 2)


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting: its field name, default (as text), help and parser."""

    name: str
    default: str
    help: str
    parse: Callable[[str], object]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: Final[tuple[SettingSpec, ...]] = (
    SettingSpec("addr", "127.0.0.1:8090", "Address to listen on, HOST:PORT (port 0 picks a free one).", _parse_addr),
    SettingSpec("data_dir", "./data", "Directory for blobs, spool files and the SQLite catalog.", _parse_path),
    SettingSpec("max_upload_mb", "512", "Largest accepted file, in MiB (enforced while streaming).", _parse_int(1)),
    SettingSpec("max_files_per_request", "10000", "Most file parts accepted in one request.", _parse_int(1)),
    SettingSpec("workers", "", "Worker threads for batch ingest (default: cores x 2).", _parse_int(1, 1024)),
    SettingSpec("queue_size", "10000", "Files that may wait for a worker before ingest answers 503.", _parse_int(1)),
    SettingSpec("fsync", "always", "Durability: `always` (answer after bytes are on disk) or `never`.", _parse_fsync),
    SettingSpec("log_level", "info", "Log level: debug, info, warning or error.", _parse_choice(LOG_LEVELS)),
    SettingSpec("min_free_mb", "256", "Ingest answers 507 below this much free disk (MiB).", _parse_int(0)),
    SettingSpec("shutdown_timeout", "30", "Seconds in-flight requests get to finish on SIGTERM.", _parse_float(0)),
    SettingSpec("accel_redirect", "", "nginx internal location for X-Accel-Redirect downloads.", _parse_str),
    SettingSpec("api_tokens", "", "API tokens, comma-separated: `TOKEN`, `TOKEN:ro` or `TOKEN:rw`.", _parse_tokens),
    SettingSpec("api_token_file", "", "File with one API token per line (same syntax as api_tokens).", _parse_str),
    SettingSpec("catalog", "", "Catalog URL: empty for SQLite in the data dir, or postgresql://...", _parse_str),
    SettingSpec("blobs", "", "Blob store URL: empty for the data dir, or s3://bucket/prefix.", _parse_str),
    SettingSpec("s3_endpoint", "", "S3 endpoint URL for an S3-compatible store (empty: AWS).", _parse_str),
    SettingSpec("s3_region", "us-east-1", "S3 region.", _parse_str),
    SettingSpec("s3_access_key", "", "S3 access key id.", _parse_str),
    SettingSpec("s3_secret_key", "", "S3 secret access key.", _parse_str),
    SettingSpec("job_ttl", "86400", "Seconds finished async ingest jobs stay readable.", _parse_int(1)),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The running configuration; built once at start and passed down, never global."""

    addr: tuple[str, int] = ("127.0.0.1", 8090)
    data_dir: Path = Path("./data")
    max_upload_mb: int = 512
    max_files_per_request: int = 10_000
    workers: int = 4
    queue_size: int = 10_000
    fsync: FsyncMode = FsyncMode.ALWAYS
    log_level: str = "info"
    min_free_mb: int = 256
    shutdown_timeout: float = 30.0
    accel_redirect: str = ""
    api_tokens: tuple[str, ...] = ()
    api_token_file: str = ""
    catalog: str = ""
    blobs: str = ""
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    job_ttl: int = 86_400

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def host(self) -> str:
        return self.addr[0]

    @property
    def port(self) -> int:
        return self.addr[1]

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None) -> Settings:
        """Build settings from defaults, then the environment, then explicit overrides (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in SETTINGS:
            raw = spec.default
            source = "default"
            if spec.env in env:
                raw, source = env[spec.env], spec.env
            if overrides and overrides.get(spec.name) is not None:
                raw, source = overrides[spec.name], spec.flag
            if spec.name == "workers" and raw == "":
                values[spec.name] = _default_workers()
                continue
            try:
                values[spec.name] = spec.parse(raw)
            except ValueError as exc:
                where = spec.env if source == "default" else source
                raise SettingsError(f"{where}: invalid value {raw!r}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]


assert {spec.name for spec in SETTINGS} == {f.name for f in fields(Settings)}, "SETTINGS and Settings disagree"
