"""Shared CLI plumbing: every setting but the secrets as a flag, and settings built from parsed arguments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from rhinobox.settings import SETTINGS, Settings, SettingSpec

__all__ = ["add_setting_flags", "settings_from_args"]


class _RefuseSecret(argparse.Action):
    """A secret given as a flag: refused, since every local user can read a command line (`ps`)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, spec: SettingSpec, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.spec = spec

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        instead = f"set {self.spec.env}"
        if self.spec.secret_file:
            instead += f" or --{self.spec.secret_file.replace('_', '-')}"
        parser.error(f"{option_string}: a secret is not taken on the command line (ps shows it to anyone); {instead}")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add `--<setting>` for every setting but the secrets (each overrides its RHINOBOX_* variable)."""
    group = parser.add_argument_group("settings (each also RHINOBOX_<NAME>)")
    for spec in SETTINGS:
        if spec.flag is not None:
            group.add_argument(spec.flag, dest=spec.name, default=None, metavar=spec.name.upper(), help=spec.help)
        else:
            refused = "--" + spec.name.replace("_", "-")
            group.add_argument(refused, dest=spec.name, default=None, action=_RefuseSecret, spec=spec)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by any setting flags given. Raises SettingsError."""
    overrides = {spec.name: getattr(args, spec.name, None) for spec in SETTINGS if spec.flag is not None}
    return Settings.load(overrides={k: v for k, v in overrides.items() if v is not None})
