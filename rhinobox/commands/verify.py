"""`rhinobox verify [--sample N] [--repair [--force]]`: rehash blobs, find missing ones and orphans; exit 1 on any.

Exit status: 0 if nothing was wrong, 1 if anything was found (also when `--repair` fixed it, so a
cron job still alerts), 2 if it could not run (bad arguments or settings, `--repair` while a server
holds the data directory, or `--repair` refused because the blob store looks absent: the report is
printed, nothing is changed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import IO, Final

from rhinobox.blobs.layout import BLOBS_DIRNAME
from rhinobox.commands.options import add_setting_flags, settings_from_args
from rhinobox.datadir import DataDirLock, DataDirLocked
from rhinobox.settings import Settings
from rhinobox.verify import QUARANTINE_DIRNAME, RepairRefused, VerifyReport, verify

__all__ = ["ProgressBar", "register"]

BAR_WIDTH: Final = 30
REDRAW_SECONDS: Final = 0.1  # on a terminal
LOG_EVERY_PERCENT: Final = 10  # when stderr is a file or pipe: a line per step, not a flood


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "verify",
        help="rehash blobs and check them against the catalog",
        description="Rehash every blob (or a sample) and compare the blob store with the catalog. "
        "Reports corrupt blobs (content does not match the name), missing blobs (catalog entries "
        "without bytes) and orphans (bytes without a catalog entry). Exit 1 if anything was found.",
    )
    parser.add_argument("--sample", type=int, metavar="N", help="rehash only N random blobs (all are still listed)")
    parser.add_argument(
        "--repair",
        action="store_true",
        help=f"move corrupt blobs and orphans to <data dir>/{QUARANTINE_DIRNAME}/ and drop catalog entries "
        "whose blob is corrupt or missing, saving their rows to a removed-<time>.jsonl there first "
        "(refused while a server uses the data dir)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --repair: drop the entries even when the blob store is empty or more than 10%% "
        "(and more than 10) of the entries lack an intact blob, which usually means the blob "
        "directory is not mounted or not the right one",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_setting_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.sample is not None and args.sample < 1:
        print("rhinobox verify: --sample must be at least 1", file=sys.stderr)
        return 2
    if args.force and not args.repair:
        print("rhinobox verify: --force only applies with --repair", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    lock = DataDirLock(settings.data_dir)
    if args.repair:
        try:
            lock.acquire()  # the server's per-hash locks do not reach this process: it must not be running
        except DataDirLocked as exc:
            print(f"rhinobox verify: {exc}; stop the server before --repair", file=sys.stderr)
            return 2
    progress = None if args.no_progress else ProgressBar(sys.stderr)
    refused: RepairRefused | None = None
    try:
        report = asyncio.run(_verify(settings, args.sample, args.repair, args.force, progress))
    except RepairRefused as exc:
        refused, report = exc, exc.report
    finally:
        lock.release()
    if progress is not None:
        progress.finish()
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print_report(report, sys.stdout)
    if refused is not None:
        print(
            f"rhinobox verify: refusing to repair: {refused}; is the blob store "
            f"({settings.blobs or settings.data_dir / BLOBS_DIRNAME}) mounted and the right one? Nothing was changed; "
            "rerun with --repair --force to drop these catalog entries anyway",
            file=sys.stderr,
        )
        return 2
    return 1 if report.problems else 0


async def _verify(
    settings: Settings, sample: int | None, repair: bool, force: bool, progress: ProgressBar | None
) -> VerifyReport:
    from rhinobox.backends import make_blob_store, make_catalog

    store = make_blob_store(settings)
    catalog = make_catalog(settings)
    await asyncio.get_running_loop().run_in_executor(None, store.open)
    await catalog.open()
    try:
        return await verify(
            store,
            catalog,
            settings.data_dir / QUARANTINE_DIRNAME,
            sample=sample,
            repair=repair,
            force=force,
            progress=progress.update if progress is not None else None,
        )
    finally:
        await catalog.close()
        store.close()


def print_report(report: VerifyReport, out: IO[str]) -> None:
    for label, digests in (("corrupt", report.corrupt), ("missing", report.missing), ("orphan", report.orphans)):
        for digest in digests:
            print(f"{label} {digest}", file=out)
    for digest in report.uncatalogued:
        print(f"repaired: removed catalog entry {digest}", file=out)
    for digest in report.quarantined:
        print(f"repaired: moved {digest} to {QUARANTINE_DIRNAME}/", file=out)
    if report.removed_log is not None:
        print(f"repaired: the removed catalog rows are saved in {report.removed_log}", file=out)
    scope = f"{report.hashed} sampled" if report.sampled else str(report.hashed)
    print(
        f"{scope} of {report.stored} blob(s) rehashed ({_size(report.hashed_bytes)}) in {report.seconds:.1f}s; "
        f"{report.catalogued} catalog entries; {len(report.corrupt)} corrupt, {len(report.missing)} missing, "
        f"{len(report.orphans)} orphan(s)",
        file=out,
    )


class ProgressBar:
    """`[#####.....] 512/1024 blobs 3.1 GiB` redrawn in place on a terminal, a line per 10% elsewhere."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._tty = out.isatty()
        self._last_draw = 0.0
        self._last_step = -1
        self._drawn = False

    def update(self, done: int, total: int, hashed_bytes: int) -> None:
        fraction = done / total if total else 1.0
        text = (
            f"[{'#' * int(fraction * BAR_WIDTH):<{BAR_WIDTH}}] {done}/{total} blobs {_size(hashed_bytes)} "
            f"{fraction:4.0%}"
        )
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= REDRAW_SECONDS or done == total:
                self._out.write("\r" + text)
                self._out.flush()
                self._last_draw, self._drawn = now, True
            return
        step = int(fraction * 100) // LOG_EVERY_PERCENT
        if step != self._last_step:
            self._last_step = step
            print("verify: " + text, file=self._out, flush=True)

    def finish(self) -> None:
        if self._tty and self._drawn:
            self._out.write("\n")
            self._out.flush()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"
