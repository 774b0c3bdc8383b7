"""Subcommands of `rhinobox`: one module each, exposing `register(subparsers)`.

`rhinobox.cli` discovers the modules here, so adding a command is adding a module.
"""
