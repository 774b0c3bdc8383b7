"""`rhinobox serve`: run the HTTP server with settings from RHINOBOX_* variables and flags."""

from __future__ import annotations

import argparse
import logging

from rhinobox.commands.options import add_setting_flags, settings_from_args

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("serve", help="run the HTTP server")
    add_setting_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rhinobox.server import serve

    settings = settings_from_args(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return serve(settings)
