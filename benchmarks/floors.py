"""The disk and hash floors: the same bytes written the way the server writes them, or only hashed.

Disk floor (per batch): create + write a temp file per file, rename into `blobs/<2 hex>/<name>` of a
pre-created 256-directory fan-out, one syncfs (only with `sync=True`), exactly the calls RhinoBox
makes with RHINOBOX_FSYNC=always, without HTTP, hashing, sniffing or the catalog.
Hash floor: BLAKE3 of the same bytes, one file at a time.

Finished trees are moved aside (`discard`), not deleted: on an ext4 without a journal (as on these
machines: /proc/fs/jbd2 is empty) the inode allocator skips every inode freed in the last 30 s, so a
tree deleted between targets slows whichever target runs next (perf showed `recently_deleted` at 20%
of the server's CPU). The bench deletes the whole work directory, trash included, at the end.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import blake3

from benchmarks.workload import Streamed
from rhinobox.blobs.fsops import sync_filesystem

__all__ = [
    "TRASH_DIR",
    "FileLike",
    "delete_tree",
    "discard",
    "disk_floor",
    "hash_floor",
    "pack_floor",
    "settle_after_deletes",
]

FileLike = bytes | Streamed
_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
TRASH_DIR: Final = ".trash"  # beside each discarded tree; removed with the bench's work directory


# ext4 without a journal (this machine's root) does not reuse an inode freed in the last 60 s, or 360 s
# while its inode table block is dirty (fs/ext4/ialloc.c: RECENTCY_MIN, RECENTCY_DIRTY): file creation
# right after a large delete scans past every such inode, and a benchmark would measure that scan.
INODE_REUSE_SECONDS: Final = 60
DELETED_STAMP: Final = "rhinobox-bench-deleted-at"


def delete_tree(path: Path) -> None:
    """Delete a finished work tree at the end of a run; write the inode tables back and note the time."""
    shutil.rmtree(path, ignore_errors=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync_filesystem(fd)  # clean inode table blocks: the 60 s rule applies, not the 360 s one
    finally:
        os.close(fd)
    (path.parent / DELETED_STAMP).write_text(f"{time.time():.3f}")


def settle_after_deletes(workdir: Path) -> float:
    """Wait until an earlier run's deleted inodes may be reused again; returns the seconds waited."""
    try:
        deleted_at = float((workdir / DELETED_STAMP).read_text())
    except (OSError, ValueError):
        return 0.0
    wait = deleted_at + INODE_REUSE_SECONDS - time.time()
    if wait <= 0:
        return 0.0
    time.sleep(min(wait, INODE_REUSE_SECONDS))
    return wait


def discard(path: Path) -> None:
    """Move a finished tree into the trash beside it (a rename: no inode freed during the run)."""
    if not path.exists():
        return
    trash = path.parent / TRASH_DIR
    trash.mkdir(exist_ok=True)
    path.rename(trash / f"{path.name}-{time.monotonic_ns()}")


def _chunks(file: FileLike, ring: Sequence[bytes]) -> Iterator[bytes | memoryview]:
    if isinstance(file, bytes):
        yield file
        return
    left = file.size
    for block in itertools.cycle(ring):
        if left <= 0:
            return
        yield memoryview(block)[: min(left, len(block))]
        left -= len(block)


def _write_file(path: Path, file: FileLike, ring: Sequence[bytes]) -> None:
    fd = os.open(path, _FLAGS, 0o644)
    try:
        for chunk in _chunks(file, ring):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def make_tree(root: Path) -> tuple[Path, Path]:
    """A fresh `tmp/` and `blobs/00..ff` under `root` (created before timing, as the server does at open)."""
    discard(root)
    spool, blobs = root / "tmp", root / "blobs"
    spool.mkdir(parents=True)
    for prefix in range(256):
        (blobs / f"{prefix:02x}").mkdir(parents=True)
    return spool, blobs


def disk_floor(
    root: Path,
    batches: Sequence[Sequence[FileLike]],
    names: Sequence[Sequence[str]],
    *,
    sync: bool,
    ring: Sequence[bytes] = (),
    threads: int = 1,
) -> float:
    """Seconds to store every batch (hex `names` pick the fan-out dir); the tree is removed afterwards."""
    spool, blobs = make_tree(root)
    dirfd = os.open(blobs, os.O_RDONLY | os.O_DIRECTORY)
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    try:
        start = time.perf_counter()
        for batch, batch_names in zip(batches, names, strict=True):
            _store_batch(pool, threads, dirfd, spool, blobs, batch, batch_names, sync, ring)
        return time.perf_counter() - start
    finally:
        os.close(dirfd)
        if pool is not None:
            pool.shutdown()
        discard(root)


def _store_batch(
    pool: ThreadPoolExecutor | None,
    threads: int,
    dirfd: int,
    spool: Path,
    blobs: Path,
    batch: Sequence[FileLike],
    names: Sequence[str],
    sync: bool,
    ring: Sequence[bytes],
) -> None:
    temps = [spool / f"{name}.spool" for name in names]
    finals = [blobs / name[:2] / name for name in names]
    _run(pool, threads, lambda i: _write_file(temps[i], batch[i], ring), len(batch))
    _run(pool, threads, lambda i: os.rename(temps[i], finals[i]), len(batch))
    if sync:
        sync_filesystem(dirfd)  # one sync for the bytes and the names, as RhinoBox does


def _run(pool: ThreadPoolExecutor | None, threads: int, step: Callable[[int], object], count: int) -> None:
    if pool is None:
        for index in range(count):
            step(index)
        return
    slices = [range(t, count, threads) for t in range(threads)]
    list(pool.map(lambda indices: [step(i) for i in indices], slices))


def hash_floor(files: Sequence[FileLike], ring: Sequence[bytes] = ()) -> float:
    """Seconds to BLAKE3 every file (single-threaded hasher, as in the server's small-file path)."""
    start = time.perf_counter()
    for file in files:
        hasher = blake3.blake3()
        for chunk in _chunks(file, ring):
            hasher.update(chunk)
        hasher.hexdigest()
    return time.perf_counter() - start


def pack_floor(root: Path, batches: Sequence[Sequence[bytes]], *, sync: bool) -> float:
    """Seconds to append every batch to one pack file (plus a small index file per batch) and sync.

    The figure for the packing proposal in docs/dev/performance-log.md: what small blobs would cost if they
    were appended to large files (as SeaweedFS volumes or Perkeep's blobpacked do) instead of one
    file each.
    """
    discard(root)
    root.mkdir(parents=True)
    dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        start = time.perf_counter()
        for number, batch in enumerate(batches):
            pack = os.open(root / f"pack-{number:06d}", _FLAGS, 0o644)
            index = []
            offset = 0
            try:
                for data in batch:
                    os.write(pack, data)
                    index.append(f"{offset} {len(data)}\n")
                    offset += len(data)
            finally:
                os.close(pack)
            _write_file(root / f"pack-{number:06d}.idx", "".join(index).encode(), ())
            if sync:
                sync_filesystem(dirfd)
        return time.perf_counter() - start
    finally:
        os.close(dirfd)
        discard(root)
