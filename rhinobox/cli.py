"""`rhinobox serve` and the operator's tools. Every setting is also a flag (`--max-upload-mb 64`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rhinobox import __version__
from rhinobox.settings import SETTINGS, Settings, SettingsError

__all__ = ["build_parser", "main"]


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each also RHINOBOX_<NAME>)")
    for spec in SETTINGS:
        group.add_argument(spec.flag, dest=spec.name, default=None, metavar=spec.name.upper(), help=spec.help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rhinobox", description="Content-addressed media ingest server.")
    parser.add_argument("--version", action="version", version=f"rhinobox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    _add_setting_flags(serve)
    return parser


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {spec.name: getattr(args, spec.name, None) for spec in SETTINGS}
    return Settings.load(overrides={k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings_from(args)
    except SettingsError as exc:
        print(f"rhinobox: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from rhinobox.server import serve

        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
        return serve(settings)
    return 2
