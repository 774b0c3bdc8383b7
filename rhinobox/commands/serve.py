"""`rhinobox serve`: run the HTTP server with settings from RHINOBOX_* variables and flags."""

from __future__ import annotations

import argparse
import sys

from rhinobox.commands.options import add_setting_flags, settings_from_args
from rhinobox.logs import setup_logging

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("serve", help="run the HTTP server")
    add_setting_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rhinobox.datadir import DataDirLocked
    from rhinobox.errors import InvalidRules
    from rhinobox.server import serve
    from rhinobox.supervisor import supervise

    settings = settings_from_args(args)
    setup_logging(settings.log_level)
    try:
        # Several processes: a supervisor and its serving processes (rhinobox.supervisor); one: this one serves.
        return supervise(settings) if settings.processes > 1 else serve(settings)
    except DataDirLocked as exc:
        print(f"rhinobox: {exc}", file=sys.stderr)
        return 1
    except InvalidRules as exc:  # saved rules edited by hand: nothing was served with the wrong ones
        print(f"rhinobox: {exc}; fix the rules, or remove them to start with the defaults", file=sys.stderr)
        return 1
