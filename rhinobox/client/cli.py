"""What the client-side commands (upload, download, ls, stats) share: connection flags and output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Final, TextIO

from rich.console import Console

from rhinobox.client.client import DEFAULT_SERVER, RhinoBoxClient
from rhinobox.client.retry import DEFAULT_ATTEMPTS, RetryPolicy

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "SERVER_ENV",
    "TOKEN_ENV",
    "add_connection_flags",
    "client_from_args",
    "console_for",
    "format_size",
    "print_json",
]

SERVER_ENV: Final = "RHINOBOX_SERVER"
TOKEN_ENV: Final = "RHINOBOX_TOKEN"
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"server URL (default: ${SERVER_ENV} or {DEFAULT_SERVER})",
    )
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None, help=f"API token (default: ${TOKEN_ENV})")
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_ATTEMPTS,
        metavar="N",
        help=f"tries per request on 503 or connection errors (default {DEFAULT_ATTEMPTS})",
    )


def client_from_args(args: argparse.Namespace) -> RhinoBoxClient:
    return RhinoBoxClient(args.server, token=args.token, retry=RetryPolicy(attempts=max(1, args.retries)))


def console_for(stream: TextIO) -> Console:
    """A rich console on `stream`; colours and live display only when it is a terminal."""
    return Console(file=stream, highlight=False, soft_wrap=True, force_terminal=None)


def print_json(data: Any, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    json.dump(data, out, indent=2, ensure_ascii=False)
    out.write("\n")
    out.flush()


def format_size(size: int | float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
