"""`rhinobox upload PATH...`: upload files, folders and globs, skipping content the server already holds."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import stat
import sys
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
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
from rhinobox.client.uploader import Uploader, UploadItem, UploadOptions, UploadReport, expand_paths

__all__ = ["register"]

MIB: Final = 1024 * 1024


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "upload",
        help="upload files, folders (recursively) and globs",
        description="Hash files locally, skip content the server already holds, upload the rest in batches.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file, folder (recursive) or glob (quote it)")
    add_connection_flags(parser)
    parser.add_argument("--concurrency", type=_positive_int, default=4, help="requests in flight (default 4)")
    parser.add_argument("--batch-files", type=_positive_int, default=100, help="most files per request (100)")
    parser.add_argument("--batch-mb", type=_positive_float, default=64.0, help="most MiB per request (64)")
    parser.add_argument("--category", help="category hint: a sub-folder under the detected category")
    parser.add_argument("--json", action="store_true", help="print per-file results as JSON, in input order")
    parser.add_argument("--no-skip", action="store_true", help="send every file, even content the server holds")
    parser.add_argument(
        "--resumable-mb",
        type=_positive_float,
        default=64.0,
        help="files of at least this many MiB go by resumable upload, resumed on the next run if cut (64)",
    )
    parser.set_defaults(func=run)


class ProgressView:
    """The live bar: files hashed, then files and bytes done, with rate and ETA."""

    def __init__(self, progress: Progress, files: int, size: int) -> None:
        self.progress = progress
        self.files = files
        self.hashed_count = 0
        self.done = 0
        self.hash_task: TaskID = progress.add_task("hashing", total=size, files=f"0/{files} files")
        self.send_task: TaskID = progress.add_task("uploading", total=None, files=f"0/{files} files", visible=False)

    def planned(self, files: int, size: int) -> None:
        self.progress.update(self.send_task, total=size, visible=True)

    def hashed(self, item: UploadItem) -> None:
        self.hashed_count += 1
        files = f"{self.hashed_count}/{self.files} files"
        self.progress.update(self.hash_task, advance=item.size, files=files)

    def sent(self, size: int) -> None:
        self.progress.update(self.send_task, advance=size)

    def finished(self, item: UploadItem) -> None:
        self.done += 1
        advance = item.size if item.skipped else 0  # sent bytes were counted as they went out
        self.progress.update(self.send_task, advance=advance, files=f"{self.done}/{self.files} files")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:>9}"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def summary_table(report: UploadReport) -> Table:
    table = Table(title="upload summary", show_header=True)
    table.add_column("stored", justify="right")
    table.add_column("duplicate", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("bytes sent", justify="right")
    table.add_column("bytes skipped", justify="right")
    table.add_row(
        str(report.count("stored")),
        str(report.count("duplicate")),
        str(len(report.failed)),
        format_size(report.bytes_sent),
        format_size(report.bytes_skipped),
    )
    return table


def print_failures(console: Console, report: UploadReport) -> None:
    for item in report.failed:
        code, message = (item.error.code, item.error.message) if item.error else ("unknown", "no result")
        console.print(f"[red]FAILED[/red] {item.given}: {code}: {message}", markup=True, highlight=False)


async def upload(args: argparse.Namespace) -> int:
    paths = expand_paths(args.paths)
    ui = console_for(sys.stderr if args.json else sys.stdout)
    if not paths:
        console_for(sys.stderr).print("rhinobox upload: no files to upload")
        return EXIT_FAILED
    options = UploadOptions(
        concurrency=args.concurrency,
        batch_files=args.batch_files,
        batch_bytes=max(1, int(args.batch_mb * MIB)),
        category=args.category,
        skip_known=not args.no_skip,
        resumable_threshold=max(1, int(args.resumable_mb * MIB)),
    )
    async with client_from_args(args) as client:
        if ui.is_terminal:
            with _progress(ui) as progress:
                view = ProgressView(progress, len(paths), await asyncio.to_thread(_total_size, paths))
                report = await Uploader(client, options, view).run(paths)
        else:
            report = await Uploader(client, options).run(paths)
    if args.json:
        print_json(report.as_json())
        print_failures(console_for(sys.stderr), report)
    else:
        ui.print(summary_table(report))
        print_failures(ui, report)
    return EXIT_OK if not report.failed else EXIT_FAILED


def _total_size(paths: list[tuple[Path, str]]) -> int:
    """What hashing will read, for the bar (files that cannot be read count as nothing)."""
    total = 0
    for path, _ in paths:
        with contextlib.suppress(OSError):
            info = path.stat()
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def run(args: argparse.Namespace) -> int:
    return asyncio.run(upload(args))
