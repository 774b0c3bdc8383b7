"""`rhinobox ls`: a quick look at what the server holds, newest first, with the listing's filters."""

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
    parser = commands.add_parser("ls", help="list stored files, newest first")
    parser.add_argument("--category", help="category prefix, e.g. images or images/png")
    parser.add_argument("--mime", help="exact MIME type")
    parser.add_argument("--name", help="substring of any upload name (case-insensitive)")
    parser.add_argument("--limit", type=int, default=50, help="how many files (default 50; at most 1000)")
    parser.add_argument("--cursor", help="the `next` cursor of an earlier listing")
    parser.add_argument("--json", action="store_true", help="print the server's page as JSON")
    add_connection_flags(parser)
    parser.set_defaults(func=run)


async def ls(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        try:
            page = await client.list_files(
                category=args.category, mime=args.mime, name=args.name, limit=args.limit, cursor=args.cursor
            )
        except ServerError as exc:
            console_for(sys.stderr).print(f"rhinobox ls: {exc.code}: {exc.message}")
            return EXIT_FAILED
        except (RhinoBoxClientError, aiohttp.ClientError) as exc:
            console_for(sys.stderr).print(f"rhinobox ls: {exc}")
            return EXIT_FAILED
    if args.json:
        print_json({"files": [dataclasses.asdict(file) for file in page.files], "next": page.next})
        return EXIT_OK
    console = console_for(sys.stdout)
    if not console.is_terminal:  # one tab-separated line per file, for scripts
        for file in page.files:
            fields = (file.hash, str(file.size), file.mime, file.category, file.name or "", file.first_upload_at)
            sys.stdout.write("\t".join(fields) + "\n")
        return EXIT_OK
    table = Table(show_header=True, box=None)
    for column in ("hash", "size", "mime", "category", "name", "first upload"):
        table.add_column(column, justify="right" if column == "size" else "left", no_wrap=column == "hash")
    for file in page.files:
        size = format_size(file.size)
        table.add_row(file.hash, size, file.mime, file.category, file.name or "", file.first_upload_at)
    console.print(table)
    if page.next:
        console.print(f"more: --cursor {page.next}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return asyncio.run(ls(args))
