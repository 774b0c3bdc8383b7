"""Settings: defaults, environment, flags, secrets, and errors that name the variable."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rhinobox.backends import s3_secret_key
from rhinobox.cli import build_parser
from rhinobox.settings import SETTINGS, FsyncMode, Settings, SettingsError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_defaults_serve_one_machine() -> None:
    settings = Settings.load(environ={})
    assert settings.addr == ("127.0.0.1", 8090)
    assert settings.data_dir == Path("./data")
    assert settings.max_upload_mb == 65536
    assert settings.max_files_per_request == 10_000
    assert settings.workers == max(2, (os.cpu_count() or 1) * 2)
    assert settings.queue_size == 10_000
    assert settings.fsync is FsyncMode.ALWAYS


def test_defaults_are_written_once() -> None:
    """The dataclass's defaults are its settings' default texts, parsed: `Settings()` is the loaded default."""
    assert Settings() == Settings.load(environ={})
    for spec in SETTINGS:
        assert getattr(Settings(), spec.name) == spec.parse(spec.default), spec.name


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
        if spec.flag is not None:
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


TOKEN = "tok-4f1d9b2c"
SECRET = "s3-secret-8e7a6c5b"


def test_secrets_are_no_flags() -> None:
    secrets = {spec.name: spec for spec in SETTINGS if spec.secret}
    assert set(secrets) == {"api_tokens", "s3_secret_key"}
    assert all(spec.flag is None for spec in secrets.values())
    flags = {option for action in _serve_parser()._actions for option in action.option_strings}
    assert "--api-token-file" in flags
    assert "--s3-secret-key-file" in flags


@pytest.mark.parametrize(
    ("flag", "instead"),
    [("--api-tokens", "RHINOBOX_API_TOKENS or --api-token-file"), ("--s3-secret-key", "RHINOBOX_S3_SECRET_KEY")],
)
def test_a_secret_given_as_a_flag_is_refused_without_echoing_it(
    flag: str, instead: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", flag, SECRET])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert instead in err
    assert SECRET not in err
    assert not re.search(re.escape(flag) + r"(?![\w-])", _serve_parser().format_help())  # not offered


def test_secrets_still_come_from_the_environment() -> None:
    env = {"RHINOBOX_API_TOKENS": f"{TOKEN},{TOKEN}2:ro", "RHINOBOX_S3_SECRET_KEY": SECRET}
    settings = Settings.load(environ=env)
    assert settings.api_tokens == (TOKEN, f"{TOKEN}2:ro")
    assert settings.s3_secret_key == SECRET


def test_repr_and_str_mask_secrets() -> None:
    settings = Settings.load(environ={"RHINOBOX_API_TOKENS": TOKEN, "RHINOBOX_S3_SECRET_KEY": SECRET})
    for shown in (repr(settings), str(settings), f"{settings}"):
        assert TOKEN not in shown
        assert SECRET not in shown
        assert "api_tokens='***'" in shown
        assert "s3_secret_key='***'" in shown
        assert "max_upload_mb=65536" in shown  # the rest is shown as is
    assert "s3_secret_key=''" in repr(Settings())  # an empty secret shows that it is empty


def test_repr_masks_a_password_in_a_url() -> None:
    settings = Settings.load(environ={"RHINOBOX_CATALOG": f"postgresql://rhinobox:{SECRET}@db:5432/rhinobox"})
    assert SECRET not in repr(settings)
    assert "postgresql://rhinobox:***@db:5432/rhinobox" in repr(settings)
    assert settings.catalog.endswith(f":{SECRET}@db:5432/rhinobox")  # the value itself is intact


def test_s3_secret_key_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "s3-secret"
    key_file.write_text(f"  {SECRET}\n")
    settings = Settings.load(environ={"RHINOBOX_S3_SECRET_KEY_FILE": str(key_file)})
    assert s3_secret_key(settings) == SECRET
    assert SECRET not in repr(settings)
    assert s3_secret_key(Settings.load(environ={"RHINOBOX_S3_SECRET_KEY": SECRET})) == SECRET


@pytest.mark.parametrize("case", ["both", "missing", "empty"])
def test_s3_secret_key_file_errors_name_the_variable(tmp_path: Path, case: str) -> None:
    key_file = tmp_path / "s3-secret"
    env = {"RHINOBOX_S3_SECRET_KEY_FILE": str(key_file)}
    if case == "both":
        key_file.write_text(SECRET)
        env["RHINOBOX_S3_SECRET_KEY"] = SECRET
    elif case == "empty":
        key_file.write_text("\n")
    with pytest.raises(SettingsError, match="RHINOBOX_S3_SECRET_KEY_FILE") as raised:
        s3_secret_key(Settings.load(environ=env))
    assert SECRET not in str(raised.value)


def _serve_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve: argparse.ArgumentParser = commands.choices["serve"]
    return serve
