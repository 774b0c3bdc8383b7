"""Shared CLI plumbing: every setting as a flag, and settings built from parsed arguments."""

from __future__ import annotations

import argparse

from rhinobox.settings import SETTINGS, Settings

__all__ = ["add_setting_flags", "settings_from_args"]


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add `--<setting>` for every setting (each overrides its RHINOBOX_* variable)."""
    group = parser.add_argument_group("settings (each also RHINOBOX_<NAME>)")
    for spec in SETTINGS:
        group.add_argument(spec.flag, dest=spec.name, default=None, metavar=spec.name.upper(), help=spec.help)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by any setting flags given. Raises SettingsError."""
    overrides = {spec.name: getattr(args, spec.name, None) for spec in SETTINGS}
    return Settings.load(overrides={k: v for k, v in overrides.items() if v is not None})
