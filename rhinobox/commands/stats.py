"""`rhinobox stats`: how much the server holds and what deduplication saved."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

import aiohttp
from rich.table import Table

from rhinobox.client.cli import (
    EXIT_FAILED,
    EXIT_OK,
    add_connection_flags,
    client_from_args,
    console_for,
    format_size,
    print_json,
)
from rhinobox.client.errors import RhinoBoxClientError, ServerError

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("stats", help="show what the server holds and what deduplication saved")
    parser.add_argument("--json", action="store_true", help="print the stats as JSON")
    add_connection_flags(parser)
    parser.set_defaults(func=run)


async def stats(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        try:
            result = await client.stats()
        except ServerError as exc:
            console_for(sys.stderr).print(f"rhinobox stats: {exc.code}: {exc.message}")
            return EXIT_FAILED
        except (RhinoBoxClientError, aiohttp.ClientError) as exc:
            console_for(sys.stderr).print(f"rhinobox stats: {exc}")
            return EXIT_FAILED
    if args.json:
        print_json(dataclasses.asdict(result))
        return EXIT_OK
    console = console_for(sys.stdout)
    overview = Table(show_header=False, box=None)
    overview.add_row("files (distinct blobs)", str(result.blobs))
    overview.add_row("bytes stored", format_size(result.bytes_stored))
    overview.add_row("uploads", str(result.uploads))
    overview.add_row("bytes uploaded", format_size(result.bytes_uploaded))
    overview.add_row("saved by deduplication", format_size(result.bytes_saved))
    console.print(overview)
    by_category = Table("category", "files", "bytes", show_header=True, box=None)
    for name, counts in result.categories.items():
        by_category.add_row(name, str(counts.blobs), format_size(counts.bytes))
    console.print(by_category)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return asyncio.run(stats(args))
