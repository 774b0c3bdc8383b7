"""Servers sharing a data directory keep what is theirs alone in `<data_dir>/instances/<id>/`.

With a PostgreSQL catalog and local blobs several servers may share one data directory (docs/scale-out.md):
blobs, resumable uploads and the quarantine are shared, arbitrated per hash in PostgreSQL. What one
server must not share lives in a directory of its own, named by a random id: its spool files (`tmp/`),
its group's state (`group/`, rhinobox.group_state) and its run marker (rhinobox.runmarker). The server,
and every process of its group, holds the flock on `lock` in it while it runs.

Starts take turns (`instances/startup.lock`). In its turn a start treats a directory whose lock it can
take as a dead server's: its spool files go at once, its run marker and the directory only once the
check after an unclean stop has covered that server's window (rhinobox.reconcile). So no start serves
before every dead server it found was checked, two starts never adopt the same one, and no start
touches a live server's files. A server alone on its data directory keeps the flat layout (`tmp/`,
`group/`, `rhinobox.running` in the data directory) and adopts any dead instance directory it finds;
a shared start adopts the flat layout's leftovers the same way (the data directory lock says that
the server which had the directory alone is gone). See docs/dev/shared-datadir.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rhinobox.blobs.fsops import fsync_dir
from rhinobox.blobs.layout import SPOOL_DIRNAME
from rhinobox.blobs.shared_sync import GROUP_DIRNAME
from rhinobox.datadir import ORPHAN_POLL_S, ORPHAN_WAIT_S
from rhinobox.runmarker import RUN_MARKER_FILENAME, RunMarker

__all__ = ["INSTANCES_DIRNAME", "INSTANCE_LOCK_FILENAME", "InstanceDir", "ServerHome", "instances_dir"]

log = logging.getLogger(__name__)

INSTANCES_DIRNAME: Final = "instances"
STARTUP_LOCK_FILENAME: Final = "startup.lock"
INSTANCE_LOCK_FILENAME: Final = "lock"
_ID_BYTES: Final = 8  # 64 random bits: an id is never drawn twice, so a dead server's directory is never reused


def instances_dir(data_dir: Path) -> Path:
    return data_dir / INSTANCES_DIRNAME


class InstanceDir:
    """This server's own directory; its lock is held from `create` until `remove` (clean stop) or `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def create(cls, data_dir: Path) -> InstanceDir:
        """A new directory with a fresh id, locked (in a start-up turn: no other start sees it unlocked)."""
        while True:
            path = instances_dir(data_dir) / secrets.token_hex(_ID_BYTES)
            try:
                path.mkdir(parents=True)
            except FileExistsError:
                continue
            fd = os.open(path / INSTANCE_LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
                os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            except BaseException:
                os.close(fd)
                raise
            return cls(path, fd)

    @property
    def fileno(self) -> int | None:
        """The locked descriptor: a group's serving processes inherit it, so the directory stays this
        server's until the last of them has exited."""
        return self._fd

    def remove(self) -> None:
        """A clean stop (spool empty, run marker removed): the directory goes, then the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Let go of the lock and leave the directory (an unclean stop: the next start adopts it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(slots=True)
class _Leftover:
    """What a dead server left: its instance directory, or (`lock` None) the flat layout's files."""

    home: Path  # where its tmp/, group/ and run marker are
    lock: int | None  # its instance lock, held while this start adopts it


class ServerHome:
    """Where one server keeps its own files, from its start to its stop: its run marker, and its own
    directory when it shares the data directory; during the start-up, the dead servers' leftovers.

    `shared`: this server shares the data directory (it holds the data directory lock shared), so it gets
    an instance directory and takes turns with other starts; otherwise it has the directory alone (its
    lock is exclusive: no other start runs) and keeps the flat layout.
    """

    def __init__(self, data_dir: Path, *, shared: bool) -> None:
        self.data_dir = data_dir
        self.shared = shared
        self.own: InstanceDir | None = None
        self._marker: RunMarker | None = None
        self._leftovers: list[_Leftover] = []
        self._turn: int | None = None

    @property
    def path(self) -> Path:
        """Where this server keeps its spool files, its group's state and its run marker."""
        return self.data_dir if self.own is None else self.own.path

    @property
    def instance_dir(self) -> Path | None:
        """This server's own directory (None: the flat layout, the data directory is this server's alone)."""
        return None if self.own is None else self.own.path

    @property
    def marker(self) -> RunMarker:
        if self._marker is None:
            raise RuntimeError("ServerHome.marker before begin()")
        return self._marker

    def begin(self) -> None:
        """Take this start's turn (shared), create this server's directory and run marker, and lock the
        dead servers' directories, adopting their windows for the check after an unclean stop."""
        try:
            self._claim()
            marker = RunMarker(self.path)
            marker.begin()
            self._marker = marker
            crashed = self._crashed_before()
            if crashed is not None:
                log.warning("a server that shared the data directory did not stop cleanly")
                marker.adopt(crashed)
        except BaseException:
            self.release()
            raise

    def _claim(self) -> None:
        base = instances_dir(self.data_dir)
        if self.shared:
            base.mkdir(parents=True, exist_ok=True)
            self._turn = _take_turn(base / STARTUP_LOCK_FILENAME)
            self.own = InstanceDir.create(self.data_dir)
            self._leftovers.append(_Leftover(self.data_dir, None))
        elif not base.is_dir():
            return  # never shared: nothing to adopt
        for name in sorted(os.listdir(base)):
            path = base / name
            if path == self.path or path.is_symlink() or not path.is_dir():
                continue
            lock = _lock_if_dead(path)
            if lock is not None:
                self._leftovers.append(_Leftover(path, lock))

    def _crashed_before(self) -> float | None:
        """The oldest run marker's time among the dead servers (None: none of them crashed)."""
        times = []
        for leftover in self._leftovers:
            with contextlib.suppress(FileNotFoundError):
                times.append(os.stat(leftover.home / RUN_MARKER_FILENAME).st_mtime)
        return min(times, default=None)

    def remove_dead_spool(self) -> int:
        """Remove the dead servers' spool files (their uploads died with them); returns the count."""
        removed = 0
        for leftover in self._leftovers:
            with contextlib.suppress(FileNotFoundError), os.scandir(leftover.home / SPOOL_DIRNAME) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                            removed += 1
        if removed:
            log.warning("removed %d spool file(s) of server(s) that shared the data directory", removed)
        return removed

    def started(self) -> None:
        """The start-up check covered the dead servers' windows: their markers and directories go, and
        the next start may take its turn."""
        try:
            for leftover in self._leftovers:
                _remove_leftover(leftover, self.data_dir)
        finally:
            self._end_turn()

    def end(self) -> None:
        """A clean stop: sync and remove the run marker, then this server's directory."""
        try:
            self.marker.end()
        except BaseException:
            self.release()
            raise
        if self.own is not None:
            self.own.remove()
        self._end_turn()

    def release(self) -> None:
        """An unclean stop or a failed start: the marker and this server's directory stay for the next
        start to check and adopt; the dead servers' leftovers stay for it too."""
        if self._marker is not None:
            self._marker.release()
        if self.own is not None:
            self.own.release()
        self._end_turn()

    def _end_turn(self) -> None:
        for leftover in self._leftovers:
            if leftover.lock is not None:
                os.close(leftover.lock)
        self._leftovers = []
        if self._turn is not None:
            os.close(self._turn)  # the next start's turn
            self._turn = None


def _take_turn(path: Path) -> int:
    """The start-up lock, waiting for a start that holds it (its check after a crash may take a while)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another server sharing the data directory to finish its start-up")
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_if_dead(path: Path) -> int | None:
    """The lock of the instance directory `path`, taken, if its server is gone; None while it runs.

    The serving processes of a group whose supervisor died on this host hold it a moment longer (the
    kernel is killing them): that is waited for, as for the data directory's lock.
    """
    try:
        fd = os.open(path / INSTANCE_LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        return None  # removed meanwhile by its server's clean stop
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not _holder_gone(fd) or time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(ORPHAN_POLL_S)


def _holder_gone(fd: int) -> bool:
    """Whether the lock file names a process of this host that no longer runs (its orphans still hold it)."""
    try:
        host, pid = os.pread(fd, 300, 0).decode().split()
        if host != socket.gethostname():
            return False  # another node's: its lock says whether it runs
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, OSError):
        return False
    return False


def _remove_leftover(leftover: _Leftover, data_dir: Path) -> None:
    if leftover.lock is not None:
        shutil.rmtree(leftover.home, ignore_errors=True)
        return
    # The flat layout of a server that had the directory alone: its marker (checked now) and group state.
    marker = data_dir / RUN_MARKER_FILENAME
    if marker.exists():
        marker.unlink(missing_ok=True)
        fsync_dir(os.fspath(data_dir))
    shutil.rmtree(data_dir / GROUP_DIRNAME, ignore_errors=True)
