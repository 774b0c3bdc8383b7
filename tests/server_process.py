"""Run the real server as a subprocess (`python -m rhinobox serve`) on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["RhinoBoxProcess"]

_BANNER = re.compile(rb"listening on (http://[^\s]+)")
START_TIMEOUT = 30.0


class RhinoBoxProcess:
    """A server process; `url` is known once it has printed its banner. Use as a context manager."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "RHINOBOX_DATA_DIR": str(data_dir), "RHINOBOX_ADDR": "127.0.0.1:0", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self) -> RhinoBoxProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rhinobox", "serve"], env=self.env, stdout=subprocess.PIPE, stderr=log
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
