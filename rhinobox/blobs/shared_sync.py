"""One filesystem sync at a time for the serving processes of a group, each one covering them all.

A `syncfs` makes durable every write on the filesystem made before it began, whoever made it. So the
serving processes of one data directory (rhinobox.supervisor) take turns under an exclusive `flock` on
`<data_dir>/group/blob-sync`, and record there the last sync that succeeded: a process whose writes
all came before a sync that another process began skips its own, where N processes would otherwise
run N syncs for what one covers.

Errors stay exact. A write-back error reaches `syncfs` through the filesystem's error sequence, which
each open descriptor reports once, for the errors after the descriptor was opened. Hence:

- a failed sync is recorded, and every later turn of every process fails with it (as a process's own
  failed sync fails its later ones: `LocalBlobStore.sync_failure`);
- another process's clean sync counts only if its descriptor saw every error since this process
  opened its own: it was opened first, or the `certified` span (errors since the first process of the
  group opened its descriptor, all reported by clean syncs of descriptors that saw them) reaches its
  opening. A process restarted by the supervisor waits for one clean sync of an older process.

Times are `CLOCK_MONOTONIC` nanoseconds (one clock for every process of the host). The file is valid
only for the group that created it: `create_sync_record` writes the supervisor's identity (boot id, pid,
start time), and `SharedSync.attach` refuses a file whose supervisor is not this process's parent.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "GROUP_DIRNAME",
    "SYNC_RECORD_FILENAME",
    "SharedSync",
    "SyncCounts",
    "create_sync_record",
    "read_sync_counts",
]

GROUP_DIRNAME: Final = "group"  # <data_dir>/group/: what a group's processes share (rhinobox.group_state)
SYNC_RECORD_FILENAME: Final = "blob-sync"
_MAGIC: Final = b"rbsync01"
_HEADER: Final = struct.Struct("<8s36sqq")  # magic, boot id, supervisor pid, its start time (clock ticks)
_STATE_OFFSET: Final = 64
# certified, last clean sync's begin, its descriptor's opening, its begin (wall clock), failed errno,
# syncfs calls, turns that skipped theirs
_STATE: Final = struct.Struct("<qqqdqqq")
_BOOT_ID_PATH: Final = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class SyncCounts:
    """How many turns of the group ran a `syncfs`, and how many were covered by another's."""

    calls: int
    skips: int


@dataclass(slots=True)
class _State:
    certified: int
    last_began: int
    last_opened: int
    last_began_wall: float
    failed_errno: int
    calls: int
    skips: int


def _identity(pid: int) -> tuple[bytes, int, int]:
    """(boot id, pid, start time): one process on one boot, never a later one reusing the pid."""
    boot_id = Path(_BOOT_ID_PATH).read_bytes().strip()[:36]
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return boot_id, pid, int(stat[19])  # field 22, starttime, counted after the command name


def create_sync_record(group_dir: Path, supervisor: int | None = None) -> None:
    """A fresh record for the group whose members are children of `supervisor` (default: this process)."""
    boot_id, pid, started = _identity(os.getpid() if supervisor is None else supervisor)
    path = group_dir / SYNC_RECORD_FILENAME
    tmp = path.with_suffix(".tmp")
    header = _HEADER.pack(_MAGIC, boot_id, pid, started).ljust(_STATE_OFFSET, b"\0")
    tmp.write_bytes(header + _STATE.pack(0, 0, 0, 0.0, 0, 0, 0))
    os.replace(tmp, path)


def read_sync_counts(group_dir: Path) -> SyncCounts:
    """The group's counts so far (tests and benchmarks)."""
    with open(group_dir / SYNC_RECORD_FILENAME, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        raw = os.pread(handle.fileno(), _STATE.size, _STATE_OFFSET)
    state = _State(*_STATE.unpack(raw))
    return SyncCounts(state.calls, state.skips)


class SharedSync:
    """This process's side of the group's record: `run` a sync, or reuse one another process began later."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._opened = 0  # when this process's sync descriptor was opened (set by `register`)

    @classmethod
    def attach(cls, group_dir: Path) -> SharedSync | None:
        """The record of this process's group, or None outside a group (no file, or an earlier group's)."""
        try:
            fd = os.open(group_dir / SYNC_RECORD_FILENAME, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            magic, boot_id, pid, started = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
            if magic != _MAGIC or (boot_id, pid, started) != _identity(os.getppid()):
                os.close(fd)
                return None
        except (OSError, struct.error):
            os.close(fd)
            return None
        return cls(fd)

    def register(self) -> None:
        """Stamp this process's sync descriptor, opened just before; the first in the group starts `certified`."""
        with self._turn() as fd:
            self._opened = time.monotonic_ns()  # after the open: its error sequence began before this
            state = self._read(fd)
            if state.certified == 0:
                state.certified = self._opened  # no error since the first opening is unreported yet
                self._write(fd, state)

    def run(self, want: int, sync: Callable[[], None]) -> float:
        """Make every write before `want` durable: reuse a clean sync begun after it, or run `sync`.

        Returns the wall-clock time the covering sync began; raises the group's failure, or `sync`'s.
        """
        with self._turn() as fd:
            state = self._read(fd)
            if state.failed_errno:
                raise OSError(state.failed_errno, f"another process's sync failed ({os.strerror(state.failed_errno)})")
            if state.last_began > want and self._trusts(state):
                state.skips += 1
                self._write(fd, state)
                return state.last_began_wall
            began_wall = time.time()
            began = time.monotonic_ns()
            state.calls += 1
            try:
                sync()
            except OSError as exc:
                state.failed_errno = exc.errno or errno.EIO
                self._write(fd, state)
                raise
            if self._opened <= state.certified:  # this descriptor saw every error since `certified` too
                state.certified = max(state.certified, began)
            state.last_began, state.last_opened, state.last_began_wall = began, self._opened, began_wall
            self._write(fd, state)
            return began_wall

    def _trusts(self, state: _State) -> bool:
        """Whether the last clean sync's descriptor saw every error this process's own would have."""
        return state.last_opened <= self._opened or state.last_opened <= state.certified

    @contextlib.contextmanager
    def _turn(self) -> Iterator[int]:
        fd = self._fd
        if fd is None:
            raise OSError(errno.EBADF, "the shared sync record is closed")
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while another process's sync runs: its result may cover ours
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @staticmethod
    def _read(fd: int) -> _State:
        return _State(*_STATE.unpack(os.pread(fd, _STATE.size, _STATE_OFFSET)))

    @staticmethod
    def _write(fd: int, state: _State) -> None:
        packed = _STATE.pack(
            state.certified,
            state.last_began,
            state.last_opened,
            state.last_began_wall,
            state.failed_errno,
            state.calls,
            state.skips,
        )
        os.pwrite(fd, packed, _STATE_OFFSET)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
