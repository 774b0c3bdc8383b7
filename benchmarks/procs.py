"""Servers under test as subprocesses on free loopback ports, and what /proc says about them.

RhinoBox runs as `python -m rhinobox serve`; the floor server as `python -m benchmarks.floor_server`.
Both print a `... listening on http://HOST:PORT` banner once bound.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Final

__all__ = ["ServerProcess", "floor_server", "rhinobox_server"]

_BANNER: Final = re.compile(rb"listening on (http://\S+)")
START_TIMEOUT: Final = 60.0
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
REPO_ROOT: Final = Path(__file__).resolve().parent.parent


class ServerProcess:
    """A server subprocess; `url` and `pid` are known after `start`. Use as a context manager."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.label = label
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=log, cwd=REPO_ROOT)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if match := _BANNER.search(line):
                self.url = match.group(1).decode()
                return self
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        raise RuntimeError(f"{self.label} did not start; {self.log_path} ends with:\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def status_kib(self, field: str) -> int:
        """A `Vm*` line of /proc/<pid>/status in KiB (VmRSS now, VmHWM peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux >= 4.0, `clear_refs` 5); False if not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far (all threads)."""
        user, system = self._cpu_ticks()
        return (user + system) / _CLK_TCK

    def user_cpu_seconds(self) -> float:
        """User CPU time alone: where type detection runs, apart from the kernel's file creation."""
        return self._cpu_ticks()[0] / _CLK_TCK

    def _cpu_ticks(self) -> tuple[int, int]:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def rhinobox_server(data_dir: Path, **env: str) -> ServerProcess:
    """RhinoBox on a free port with its own data dir; `env` adds RHINOBOX_* settings."""
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "RHINOBOX_DATA_DIR": str(data_dir),
        "RHINOBOX_ADDR": "127.0.0.1:0",
        "RHINOBOX_LOG_LEVEL": "warning",
        "RHINOBOX_PROCESSES": "1",  # server CPU is read from one pid; benchmarks/processes.py sets more
        **env,
    }
    label = "rhinobox " + " ".join(f"{k}={v}" for k, v in env.items())
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    return ServerProcess(label.strip(), [sys.executable, "-m", "rhinobox", "serve"], full_env, log_path)


def floor_server(out_dir: Path, parser: str) -> ServerProcess:
    """The bare aiohttp+uvloop floor server writing parts under `out_dir`, with `parser` (aiohttp|pymp)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "benchmarks.floor_server", "--dir", str(out_dir), "--parser", parser]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return ServerProcess(f"floor-{parser}", argv, env, out_dir.parent / f"{out_dir.name}-floor.log")
