"""Linux filesystem calls the standard library lacks: rename without replace, syncfs, sync_file_range.

Each falls back to a portable equivalent (or, for the write-out hint, to nothing) where the kernel or
filesystem says no.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path
from typing import Final

__all__ = ["fsync_dir", "rename_noreplace", "start_writeback", "sync_filesystem"]

_AT_FDCWD: Final = -100
_RENAME_NOREPLACE: Final = 1
_SYNC_FILE_RANGE_WRITE: Final = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
# Looked up in the process's global scope, not on libc's own handle: an LD_PRELOADed wrapper (a
# fault injector's, tests/fiu_extra.c) must win, as it does for the calls Python makes itself.
_global = ctypes.CDLL(None, use_errno=True)


def _function(name: str) -> ctypes._NamedFuncPointer | None:
    """`name` as the dynamic linker resolves it for the process (libc's where nothing interposes)."""
    return getattr(_global, name, None) or getattr(_libc, name, None)


_renameat2 = _function("renameat2")
_syncfs = _function("syncfs")
_sync_file_range = _function("sync_file_range")
if _sync_file_range is not None:
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)


def rename_noreplace(src: str | Path, dst: str | Path) -> bool:
    """Rename `src` to `dst` unless `dst` exists; True if renamed, False if `dst` was there.

    Never replaces an existing file, so a stored blob is never overwritten, even by equal bytes.
    """
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    os.unlink(src)
    return True


def sync_filesystem(fd: int) -> None:
    """Flush every dirty page and metadata change of the filesystem holding `fd` to stable storage.

    One syncfs covers a whole batch of files and directory entries, where per-file fsync would
    cost one journal commit each.
    """
    if _syncfs is None:
        os.sync()
        return
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing `length` bytes at `offset` of `fd` to disk now, without waiting for them.

    A large upload then reaches its final sync with most of its pages already on their way, instead
    of the whole file dirty at once. Advisory only (durability still comes from the sync): a kernel
    or filesystem that refuses it is ignored.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: str) -> None:
    """Make the names in directory `path` durable (a created, renamed or removed entry)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
