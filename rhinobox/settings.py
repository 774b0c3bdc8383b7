"""Every tunable of RhinoBox, as data: one frozen `Settings` built from `RHINOBOX_*` variables and flags.

Each setting is declared once, as a field of `Settings` with its default (as text), help and parser;
`SETTINGS`, the environment names, the CLI flags and the table in docs/configuration.md
(`python -m rhinobox.settings_docs`) all derive from those fields. A bad value fails at start naming its
variable. Secrets are never CLI flags (any local user can read a command line) and never shown by `repr`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from rhinobox.cpu_quota import quota_cores

__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "FsyncMode",
    "SettingSpec",
    "Settings",
    "SettingsError",
    "usable_cores",
]

ENV_PREFIX: Final = "RHINOBOX_"
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
MASK: Final = "***"  # what repr shows instead of a secret
_SPEC: Final = "rhinobox.setting"  # the key of a field's SettingSpec in its metadata

T = TypeVar("T")


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


def _parse_switch(raw: str) -> bool:
    return _parse_choice(("on", "off"))(raw) == "on"


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


def _parse_workers(raw: str) -> int:
    """Empty means two per core (at least 2): the pool overlaps libmagic and syscalls, which let go of the GIL."""
    if not raw.strip():
        return max(2, (os.cpu_count() or 1) * 2)
    return _parse_int(1, 1024)(raw)


def _parse_processes(raw: str) -> int:
    """Empty means one per core this process may run on: every core serves (1 keeps a single process)."""
    if not raw.strip():
        return usable_cores()
    return _parse_int(1, 1024)(raw)


def usable_cores() -> int:
    """The cores this process may keep busy: its CPU affinity (a cpuset), capped by its cgroup's CPU quota.

    The quota (`docker run --cpus 2.5`, a Kubernetes CPU limit) counts rounded up, as Go's GOMAXPROCS does
    (rhinobox.cpu_quota); at least 1.
    """
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        cores = max(1, os.cpu_count() or 1)
    quota = quota_cores()
    return cores if quota is None else min(cores, quota)


def _without_password(value: str) -> str:
    """`value` with the password of a URL (`scheme://user:secret@host/...`) masked; anything else as is."""
    if "@" not in value or "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return value
    if not password:
        return value
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{hostinfo}"))


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting: its field name, default (as text), help, parser, and whether its value is a secret.

    A secret has no CLI flag and is masked by `repr(Settings)`; `secret_file` names the setting that
    reads it from a file instead. `shown_default` is the docs' text for a default that is computed.
    """

    name: str
    default: str
    help: str
    parse: Callable[[str], object]
    secret: bool = False
    secret_file: str = ""
    shown_default: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str | None:
        """The CLI flag, or None for a secret (a command line is readable by every local user)."""
        return None if self.secret else "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        return self.shown_default or self.default

    def masked(self, value: object) -> object:
        """`value` as `repr` may show it: a secret as `***` (empty stays empty), a URL without its password."""
        if self.secret:
            return MASK if value else value
        return _without_password(value) if isinstance(value, str) else value


def _setting(
    default: str,
    help: str,
    parse: Callable[[str], T],
    *,
    secret: bool = False,
    secret_file: str = "",
    shown_default: str = "",
) -> T:
    """A `Settings` field whose default is `parse(default)`: the text is the one source of the default."""
    spec = SettingSpec("", default, help, parse, secret, secret_file, shown_default)
    return field(default=parse(default), metadata={_SPEC: spec})


@dataclass(frozen=True, slots=True)
class Settings:
    """The running configuration; built once at start and passed down, never global."""

    # Each `_setting(...)` is a `dataclasses.Field` whose default is evaluated once, here.

    addr: tuple[str, int] = _setting(
        "127.0.0.1:8090", "Address to listen on, HOST:PORT (port 0 picks a free one).", _parse_addr
    )
    data_dir: Path = _setting("./data", "Directory for blobs, spool files and the SQLite catalog.", _parse_path)
    max_upload_mb: int = _setting(
        "65536", "Largest accepted file, in MiB (enforced while streaming; multipart and resumable).", _parse_int(1)
    )
    max_files_per_request: int = _setting("10000", "Most file parts accepted in one request.", _parse_int(1))
    workers: int = _setting(
        "", "Worker threads for batch ingest (default: cores x 2).", _parse_workers, shown_default="cores x 2"
    )
    processes: int = _setting(
        "",
        "Serving processes sharing the port and the data directory (empty: one per usable core, the CPU "
        "affinity capped by a cgroup CPU quota rounded up; 1: a single process).",
        _parse_processes,
        shown_default="one per usable core",
    )
    queue_size: int = _setting("10000", "Files that may wait for a worker before ingest answers 503.", _parse_int(1))
    fsync: FsyncMode = _setting(
        "always", "Durability: `always` (answer after bytes are on disk) or `never`.", _parse_fsync
    )
    magic_prefilter: bool = _setting(
        "on",
        "Run only the libmagic soft-magic tests that can match an upload (same types, less CPU); "
        "`off`: all of them, as `file` does.",
        _parse_switch,
    )
    magic_native: bool = _setting(
        "on",
        "Decide which soft-magic tests may match with the compiled filter, built at install when a C++ "
        "compiler and RE2 are there (same types, less CPU); `off`, or not built: the Python one.",
        _parse_switch,
    )
    log_level: str = _setting("info", "Log level: debug, info, warning or error.", _parse_choice(LOG_LEVELS))
    min_free_mb: int = _setting("256", "Ingest answers 507 below this much free disk (MiB).", _parse_int(0))
    shutdown_timeout: float = _setting("30", "Seconds in-flight requests get to finish on SIGTERM.", _parse_float(0))
    header_timeout: float = _setting(
        "30",
        "Seconds a client may take to send the request line and headers, else 408 (0: no limit).",
        _parse_float(0),
    )
    body_timeout: float = _setting(
        "60",
        "Seconds an upload body may go without a byte, else 408; also the window body_min_rate is averaged over.",
        _parse_float(0.1),
    )
    body_min_rate: int = _setting(
        "1024",
        "Bytes per second an upload body must average over each body_timeout window, else 408 (0: no minimum).",
        _parse_int(0),
    )
    accel_redirect: str = _setting("", "nginx internal location for X-Accel-Redirect downloads.", _parse_str)
    api_tokens: tuple[str, ...] = _setting(
        "",
        "API tokens, comma-separated: `TOKEN`, `TOKEN:ro` or `TOKEN:rw`.",
        _parse_tokens,
        secret=True,
        secret_file="api_token_file",
    )
    api_token_file: str = _setting(
        "", "File with one API token per line (same syntax as api_tokens; `#` lines are comments).", _parse_str
    )
    catalog: str = _setting(
        "",
        "Catalog URL: empty for SQLite in the data dir, or postgresql://... (password: PGPASSWORD or ~/.pgpass).",
        _parse_str,
    )
    blobs: str = _setting("", "Blob store URL: empty for the data dir, or s3://bucket/prefix.", _parse_str)
    s3_endpoint: str = _setting("", "S3 endpoint URL for an S3-compatible store (empty: AWS).", _parse_str)
    s3_region: str = _setting("us-east-1", "S3 region.", _parse_str)
    s3_access_key: str = _setting("", "S3 access key id.", _parse_str)
    s3_secret_key: str = _setting(
        "", "S3 secret access key.", _parse_str, secret=True, secret_file="s3_secret_key_file"
    )
    s3_secret_key_file: str = _setting(
        "", "File holding the S3 secret access key (surrounding whitespace is ignored).", _parse_str
    )
    job_ttl: int = _setting("86400", "Seconds finished async ingest jobs stay readable.", _parse_int(1))
    web_dir: str = _setting(
        "", "Folder of the built web page served at / (empty: web/dist beside the sources).", _parse_str
    )
    upload_expiry: int = _setting(
        "86400", "Seconds a resumable upload may sit idle before it expires and its bytes are reclaimed.", _parse_int(1)
    )
    max_open_uploads: int = _setting(
        "1000", "Most resumable uploads open at once; creating another answers 503.", _parse_int(1)
    )

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def host(self) -> str:
        return self.addr[0]

    @property
    def port(self) -> int:
        return self.addr[1]

    def __repr__(self) -> str:
        shown = ", ".join(f"{spec.name}={spec.masked(getattr(self, spec.name))!r}" for spec in SETTINGS)
        return f"{type(self).__name__}({shown})"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None) -> Settings:
        """Build settings from defaults, then the environment, then explicit overrides (CLI flags).

        `overrides` may name any setting, secrets included (callers in Python); the CLI offers no flag
        for a secret.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in SETTINGS:
            raw, source = spec.default, spec.env
            if spec.env in env:
                raw = env[spec.env]
            if overrides and overrides.get(spec.name) is not None:
                raw, source = overrides[spec.name], spec.flag or spec.name
            try:
                values[spec.name] = spec.parse(raw)
            except ValueError as exc:
                shown = MASK if spec.secret else repr(raw)
                raise SettingsError(f"{source}: invalid value {shown}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]


SETTINGS: Final[tuple[SettingSpec, ...]] = tuple(replace(f.metadata[_SPEC], name=f.name) for f in fields(Settings))
