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

A process stopped or hung while it holds the lock must not stall the others' answers: a process that
waits for it longer than `LOCK_WAIT_S` runs its own `syncfs` without it (concurrent syncs are safe;
the lock only saves duplicates) and logs a warning once per stall. Such a sync records nothing but a
failure, which is a field of its own that writes under the lock never touch, so a holder that wakes
up later cannot erase it.

Times are `CLOCK_MONOTONIC` nanoseconds (one clock for every process of the host). The file is valid
only for the group that created it: `create_sync_record` writes the supervisor's identity (boot id, pid,
start time), and `SharedSync.attach` refuses a file whose supervisor is not this process's parent.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "GROUP_DIRNAME",
    "LOCK_WAIT_S",
    "SYNC_RECORD_FILENAME",
    "SharedSync",
    "SyncCounts",
    "create_sync_record",
    "read_sync_counts",
]

GROUP_DIRNAME: Final = "group"  # <data_dir>/group/: what a group's processes share (rhinobox.group_state)
SYNC_RECORD_FILENAME: Final = "blob-sync"
_MAGIC: Final = b"rbsync02"  # 02: the failure moved out of the state written under the lock
_HEADER: Final = struct.Struct("<8s36sqq")  # magic, boot id, supervisor pid, its start time (clock ticks)
# The errno of the group's first failed sync (0: none): only ever set, with or without the lock.
_FAILED_OFFSET: Final = 64
_FAILED: Final = struct.Struct("<q")
_STATE_OFFSET: Final = _FAILED_OFFSET + _FAILED.size
# certified, last clean sync's begin, its descriptor's opening, its begin (wall clock), syncfs calls,
# turns that skipped theirs: written under the lock only
_STATE: Final = struct.Struct("<qqqdqq")
_BOOT_ID_PATH: Final = "/proc/sys/kernel/random/boot_id"
# A turn is one syncfs: milliseconds (1-30 ms on a disk, 0.1 ms with little dirty data). A holder 1 s
# into its turn is stopped or hung, or the disk is so slow that one more syncfs beside it costs nothing.
LOCK_WAIT_S: Final = 1.0
# The lock's states in a process: free here, waited for by the lock thread, held, or waited for by the
# lock thread after the caller gave up (its holder is stalled; callers sync alone meanwhile).
_FREE, _WANTED, _HELD, _ABANDONED = "free", "wanted", "held", "abandoned"

log = logging.getLogger(__name__)


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
    header = _HEADER.pack(_MAGIC, boot_id, pid, started).ljust(_FAILED_OFFSET, b"\0")
    tmp.write_bytes(header + _FAILED.pack(0) + _STATE.pack(0, 0, 0, 0.0, 0, 0))
    os.replace(tmp, path)


def read_sync_counts(group_dir: Path) -> SyncCounts:
    """The group's counts so far (tests and benchmarks)."""
    with open(group_dir / SYNC_RECORD_FILENAME, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        raw = os.pread(handle.fileno(), _STATE.size, _STATE_OFFSET)
    state = _State(*_STATE.unpack(raw))
    return SyncCounts(state.calls, state.skips)


class _BoundedFlock:
    """An exclusive `flock` on `fd` whose caller stops waiting after a bound; one caller at a time.

    flock(2) has no timeout and a thread blocked in it cannot be woken, so a daemon thread of this
    process does any wait that the first try without waiting did not end, and hands the lock over. A
    caller that gives up leaves that thread waiting: it lets go of the lock as soon as it gets it, and
    until then every caller goes without at once. The thread owns `fd` from then on (see `close`).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._changed = threading.Condition()
        self._state = _FREE
        self._closed = False
        self._thread: threading.Thread | None = None

    def acquire(self, timeout: float) -> bool:
        """Whether the lock is now held: False if another holder kept it past `timeout`, or still does."""
        with self._changed:
            if self._state == _ABANDONED:
                return False
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._state = _HELD
                return True
            except BlockingIOError:
                pass
            self._state = _WANTED
            if self._thread is None:
                self._thread = threading.Thread(target=self._wait_in_line, name="shared-sync-lock", daemon=True)
                self._thread.start()
            self._changed.notify_all()
            if self._changed.wait_for(lambda: self._state == _HELD, timeout):
                return True
            self._state = _ABANDONED
        log.warning(
            "another serving process has held the group's sync lock (%s/%s) for over %.1f s (stopped or hung?): "
            "syncing without it until it is free",
            GROUP_DIRNAME,
            SYNC_RECORD_FILENAME,
            timeout,
        )
        return False

    def release(self) -> None:
        with self._changed:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self._state = _FREE

    def _wait_in_line(self) -> None:
        """The lock thread: take the lock when a caller wants it; let go of it if that caller gave up."""
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._state == _WANTED or self._closed)
                if self._state != _WANTED:
                    os.close(self.fd)  # closed while free
                    return
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # blocks while another process holds it
            with self._changed:
                if self._state == _WANTED:
                    self._state = _HELD
                    self._changed.notify_all()
                    continue
                fcntl.flock(self.fd, fcntl.LOCK_UN)  # abandoned: its holder is back
                self._state = _FREE
            log.info("the group's sync lock is free again: syncs take turns under it")

    def close(self) -> None:
        """Close `fd` now, or when the lock thread's wait ends (closed under its flock, the number could be reused)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            if self._thread is None:
                os.close(self.fd)


class SharedSync:
    """This process's side of the group's record: `run` a sync, or reuse one another process began later."""

    def __init__(self, fd: int) -> None:
        self._lock: _BoundedFlock | None = _BoundedFlock(fd)
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
        with self._turn() as (fd, locked):
            self._opened = time.monotonic_ns()  # after the open: its error sequence began before this
            if not locked:
                return  # `certified` stays as it is: a later clean turn of an older process extends it
            state = self._read(fd)
            if state.certified == 0:
                state.certified = self._opened  # no error since the first opening is unreported yet
                self._write(fd, state)

    def run(self, want: int, sync: Callable[[], None]) -> float:
        """Make every write before `want` durable: reuse a clean sync begun after it, or run `sync`.

        Returns the wall-clock time the covering sync began; raises the group's failure, or `sync`'s.
        Without the lock (its holder stalled), always runs `sync`, and records only a failure.
        """
        with self._turn() as (fd, locked):
            failed = self._failed(fd)
            if failed:
                raise OSError(failed, f"another process's sync failed ({os.strerror(failed)})")
            if not locked:
                return self._sync_alone(fd, sync)
            state = self._read(fd)
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
                self._record_failure(fd, exc)
                self._write(fd, state)
                raise
            if self._opened <= state.certified:  # this descriptor saw every error since `certified` too
                state.certified = max(state.certified, began)
            state.last_began, state.last_opened, state.last_began_wall = began, self._opened, began_wall
            self._write(fd, state)
            return began_wall

    def _sync_alone(self, fd: int, sync: Callable[[], None]) -> float:
        """A sync beside the stalled holder's: exact for this process (its own descriptor reports its errors)."""
        began_wall = time.time()
        try:
            sync()
        except OSError as exc:
            self._record_failure(fd, exc)
            raise
        return began_wall

    def _trusts(self, state: _State) -> bool:
        """Whether the last clean sync's descriptor saw every error this process's own would have."""
        return state.last_opened <= self._opened or state.last_opened <= state.certified

    @contextlib.contextmanager
    def _turn(self) -> Iterator[tuple[int, bool]]:
        """The record's descriptor, and whether this turn holds its lock (False: another held it too long)."""
        lock = self._lock
        if lock is None:
            raise OSError(errno.EBADF, "the shared sync record is closed")
        # Waits while another process's sync runs (its result may cover ours), up to LOCK_WAIT_S.
        locked = lock.acquire(LOCK_WAIT_S)
        try:
            yield lock.fd, locked
        finally:
            if locked:
                lock.release()

    @staticmethod
    def _read(fd: int) -> _State:
        return _State(*_STATE.unpack(os.pread(fd, _STATE.size, _STATE_OFFSET)))

    @staticmethod
    def _write(fd: int, state: _State) -> None:
        packed = _STATE.pack(
            state.certified, state.last_began, state.last_opened, state.last_began_wall, state.calls, state.skips
        )
        os.pwrite(fd, packed, _STATE_OFFSET)

    @staticmethod
    def _failed(fd: int) -> int:
        """The errno of the group's failed sync, 0 if none (read without the lock: set once, never cleared)."""
        failed: int = _FAILED.unpack(os.pread(fd, _FAILED.size, _FAILED_OFFSET))[0]
        return failed

    @staticmethod
    def _record_failure(fd: int, exc: OSError) -> None:
        """Every later turn of every process fails with it (8 aligned bytes: no lock needed to set them)."""
        os.pwrite(fd, _FAILED.pack(exc.errno or errno.EIO), _FAILED_OFFSET)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
