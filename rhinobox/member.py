"""A serving process of a group: `python -m rhinobox.member`, started only by rhinobox.supervisor.

It reads its `Handoff` (settings and the listening socket's descriptor) from stdin, asks the kernel
to kill it if the supervisor dies (a group never outlives the process that holds the data directory's
start-up duties), prints the listening banner on stdout once serving (the supervisor's sign that it is
ready), and serves until SIGTERM.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvloop

from rhinobox.errors import InvalidRules
from rhinobox.logs import setup_logging
from rhinobox.settings import Settings

__all__ = ["Handoff", "main"]

PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class Handoff:
    """What the supervisor hands a serving process on stdin (pickled: the settings may hold secrets)."""

    settings: Settings
    listen_fd: int
    supervisor_pid: int
    slot: int
    instance_dir: Path | None = None  # the supervisor's own directory where servers share the data directory


def _die_with_supervisor(supervisor_pid: int) -> None:
    """SIGKILL this process when its parent dies; exit now if it already has (a race with the call)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != supervisor_pid:
        raise SystemExit(1)


def main() -> int:
    handoff: Handoff = pickle.load(sys.stdin.buffer)
    _die_with_supervisor(handoff.supervisor_pid)
    settings = handoff.settings
    setup_logging(settings.log_level)
    listen = socket.socket(fileno=handoff.listen_fd)
    from rhinobox.server import run_server  # after logging is set up, as `rhinobox serve` does

    try:
        uvloop.run(run_server(settings, listen=listen, instance_dir=handoff.instance_dir))
    except InvalidRules as exc:
        print(f"rhinobox: {exc}; fix the rules, or remove them to start with the defaults", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
