"""`rhinobox`'s command line: discovers subcommands in `rhinobox.commands` and runs the chosen one."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import rhinobox.commands
from rhinobox import __version__
from rhinobox.settings import SettingsError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rhinobox", description="Content-addressed media ingest server.")
    parser.add_argument("--version", action="version", version=f"rhinobox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module_info in sorted(pkgutil.iter_modules(rhinobox.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"rhinobox.commands.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"rhinobox: configuration error: {exc}", file=sys.stderr)
        return 2
