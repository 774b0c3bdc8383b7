"""`rhinobox download HASH [-o FILE]`: fetch a blob, resuming a partial download, verified by its hash."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from rhinobox.client.cli import EXIT_FAILED, EXIT_OK, add_connection_flags, client_from_args, console_for
from rhinobox.client.errors import RhinoBoxClientError, ServerError

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "download",
        help="download a file by hash (resumes a partial download)",
        description="Download a blob to FILE (default: ./HASH). An interrupted download leaves FILE.part, "
        "which the next run resumes with a Range request; the result is checked against HASH.",
    )
    parser.add_argument("hash", metavar="HASH", help="the file's BLAKE3 hash (64 hex characters)")
    parser.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: ./HASH)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if FILE.part exists")
    add_connection_flags(parser)
    parser.set_defaults(func=run)


async def download(args: argparse.Namespace) -> int:
    digest = args.hash.strip().lower()
    dest = Path(args.output) if args.output else Path(digest)
    console = console_for(sys.stdout)
    errors = console_for(sys.stderr)
    async with client_from_args(args) as client:
        try:
            if console.is_terminal:
                size = (await client.meta(digest, limit=1)).file.size
                columns = (TextColumn("downloading"), BarColumn(), DownloadColumn(binary_units=True))
                with Progress(*columns, TransferSpeedColumn(), TimeRemainingColumn(), console=console) as bar:
                    task = bar.add_task("download", total=size)
                    await client.download(
                        digest, dest, resume=not args.no_resume, on_bytes=lambda n: bar.advance(task, n)
                    )
            else:
                await client.download(digest, dest, resume=not args.no_resume)
        except ServerError as exc:
            errors.print(f"rhinobox download: {exc.code}: {exc.message}")
            return EXIT_FAILED
        except (RhinoBoxClientError, aiohttp.ClientError, OSError) as exc:
            errors.print(f"rhinobox download: {exc}")
            return EXIT_FAILED
    console.print(f"{dest}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return asyncio.run(download(args))
