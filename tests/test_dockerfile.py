"""The Dockerfile, checked without Docker: its command, user, volume, healthcheck and settings agree
with the code, and its healthcheck command really probes a running server.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rhinobox.app import create_app
from rhinobox.settings import SETTINGS, Settings
from tests.helpers import make_settings
from tests.server_process import RhinoBoxProcess

REPO = Path(__file__).resolve().parent.parent
Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """(KEYWORD, arguments) per instruction, with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    result = []
    for entry in joined:
        keyword, _, args = entry.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def only(keyword: str) -> str:
    found = [args for kw, args in instructions() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(item, str) for item in value)
    return value


def test_base_image_is_slim_python_with_libmagic() -> None:
    base = [args for kw, args in instructions() if kw == "FROM"]
    assert len(base) == 1
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base[0])
    runs = " ".join(args for kw, args in instructions() if kw == "RUN")
    assert "apt-get install" in runs
    assert "libmagic1" in runs.split()


def test_image_builds_the_compiled_type_filter_and_keeps_only_its_runtime() -> None:
    """pip builds rhinobox/ingest/magic_*.cc with g++ and RE2's headers, removed after; libre2-9 stays."""
    copied = " ".join(args for kw, args in instructions() if kw == "COPY").split()
    assert "setup.py" in copied
    runs = [args for kw, args in instructions() if kw == "RUN"]
    building = next(run for run in runs if "pip install ." in run)
    assert building.index("libre2-dev") < building.index("pip install .") < building.index("purge")
    assert any("libre2-9" in run.split() and "purge" not in run for run in runs)


def test_runs_as_a_non_root_user_that_owns_the_data_volume() -> None:
    user = only("USER").split(":")[0]
    assert user not in ("root", "0")
    runs = " ".join(args for kw, args in instructions() if kw == "RUN")
    assert "useradd" in runs
    assert re.search(rf"useradd\b.*\b{user}\b", runs)
    assert re.search(rf"chown {user}(:{user})? /data", runs)
    assert json.loads(only("VOLUME")) == ["/data"]
    # USER comes after the install steps, so the installed code is not writable by the server.
    keywords = [kw for kw, _ in instructions()]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")


def test_command_is_the_readme_serve_command() -> None:
    command = exec_form(only("CMD"))
    assert command == ["rhinobox", "serve"]
    # README: "scripts/serve.sh"; which runs the same console script and subcommand from the venv.
    assert "scripts/serve.sh" in (REPO / "README.md").read_text()
    serve_sh = (REPO / "scripts" / "serve.sh").read_text()
    exec_line = next(line for line in serve_sh.splitlines() if line.startswith("exec "))
    assert shlex.split(exec_line)[1:3] == [".venv/bin/rhinobox", "serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rhinobox"] == "rhinobox.cli:main"
    assert only("STOPSIGNAL") == "SIGTERM"  # what rhinobox.server shuts down gracefully on


def test_image_environment_is_valid_settings() -> None:
    env = image_env()
    known = {spec.env for spec in SETTINGS}
    rhinobox_vars = {k: v for k, v in env.items() if k.startswith("RHINOBOX_")}
    assert set(rhinobox_vars) <= known, set(rhinobox_vars) - known
    settings = Settings.load(environ=rhinobox_vars)
    assert settings.data_dir == Path("/data")
    assert settings.host == "0.0.0.0"
    assert only("EXPOSE") == str(settings.port)


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignored = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")
    }
    for keyword, args in instructions():
        if keyword == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source not in ignored, source


def healthcheck_command() -> list[str]:
    args = only("HEALTHCHECK")
    options, _, command = args.partition("CMD ")
    assert re.search(r"--interval=\d+s", options)
    assert re.search(r"--timeout=\d+s", options)
    return exec_form(command)


def test_healthcheck_probes_the_healthz_route() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    app = create_app(make_settings(Path("/nonexistent")))
    assert "/healthz" in {resource.canonical for resource in app.router.resources()}


@pytest.mark.parametrize("server_up", [True, False])
def test_healthcheck_command_passes_on_a_healthy_server_and_fails_without_one(tmp_path: Path, server_up: bool) -> None:
    script = healthcheck_command()[2]
    with RhinoBoxProcess(tmp_path / "data") as server:
        addr = server.url.removeprefix("http://")
        if not server_up:
            server.stop()
        probe = subprocess.run(
            [sys.executable, "-c", script], env={"RHINOBOX_ADDR": addr}, capture_output=True, timeout=30, check=False
        )
    assert (probe.returncode == 0) is server_up, probe.stderr
