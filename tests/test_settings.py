"""Settings: defaults, environment, flags, and errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rhinobox.settings import SETTINGS, FsyncMode, Settings, SettingsError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_defaults_serve_one_machine() -> None:
    settings = Settings.load(environ={})
    assert settings.addr == ("127.0.0.1", 8090)
    assert settings.data_dir == Path("./data")
    assert settings.max_upload_mb == 512
    assert settings.max_files_per_request == 10_000
    assert settings.workers == max(2, (os.cpu_count() or 1) * 2)
    assert settings.queue_size == 10_000
    assert settings.fsync is FsyncMode.ALWAYS


def test_environment_then_flags() -> None:
    env = {"RHINOBOX_MAX_UPLOAD_MB": "64", "RHINOBOX_FSYNC": "never", "RHINOBOX_ADDR": "0.0.0.0:9000"}
    settings = Settings.load(environ=env, overrides={"max_upload_mb": "8"})
    assert settings.max_upload_mb == 8
    assert settings.max_upload_bytes == 8 * 1024 * 1024
    assert settings.fsync is FsyncMode.NEVER
    assert settings.addr == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RHINOBOX_MAX_UPLOAD_MB", "lots"),
        ("RHINOBOX_MAX_UPLOAD_MB", "0"),
        ("RHINOBOX_WORKERS", "-1"),
        ("RHINOBOX_QUEUE_SIZE", "0"),
        ("RHINOBOX_FSYNC", "sometimes"),
        ("RHINOBOX_ADDR", "nohost"),
        ("RHINOBOX_ADDR", "127.0.0.1:99999"),
        ("RHINOBOX_MAX_FILES_PER_REQUEST", "1.5"),
        ("RHINOBOX_LOG_LEVEL", "loud"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.load(environ={variable: value})


def test_bad_value_at_start_exits_with_message(tmp_path: Path) -> None:
    env = {**os.environ, "RHINOBOX_DATA_DIR": str(tmp_path), "RHINOBOX_WORKERS": "many"}
    result = subprocess.run(
        [sys.executable, "-m", "rhinobox", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "RHINOBOX_WORKERS" in result.stderr


def test_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rhinobox", "serve", "--data-dir", str(tmp_path), "--fsync", "maybe"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--fsync" in result.stderr


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    for spec in SETTINGS:
        assert f"`{spec.env}`" in text, f"{spec.env} is missing from docs/configuration.md"
        assert f"`{spec.flag}`" in text, f"{spec.flag} is missing from docs/configuration.md"


@pytest.mark.parametrize(
    ("variable", "value"), [("RHINOBOX_CATALOG", "mysql://db/x"), ("RHINOBOX_BLOBS", "ftp://bucket")]
)
def test_unusable_backend_url_exits_with_message(tmp_path: Path, variable: str, value: str) -> None:
    env = {**os.environ, "RHINOBOX_DATA_DIR": str(tmp_path), "RHINOBOX_ADDR": "127.0.0.1:0", variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "rhinobox", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
