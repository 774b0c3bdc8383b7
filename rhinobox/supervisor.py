"""Several serving processes on one data directory (`RHINOBOX_PROCESSES` > 1): the supervisor.

One Python process uses about one core (the event loop's per-request work runs under one GIL), so
`rhinobox serve` runs N serving processes (rhinobox.member) behind a supervisor that:
- owns the data directory: takes its lock (and hands the locked descriptor to every member, so the
  directory stays locked until the last of them exits), runs the start-up cleanup, the check after an
  unclean stop and the reconciliation once, and keeps the run marker;
- binds the listening socket once (port 0 picks a free port, printed in the banner) and hands it to
  every member: they all accept from one queue, so an idle process takes the next connection, and a
  process that dies loses only the connections it had accepted;
- restarts a member that dies (removing its spool files), and on SIGTERM or SIGINT stops accepting,
  lets every member drain as a single server does, then syncs and removes the run marker.

What the members must agree on lives in shared places: the SQLite catalog (WAL, each member's writer
groups its own commits), per-hash locks in a lock file (rhinobox.ingest.hash_locks), the rules file
(polled), job rows with leases, and metrics files (rhinobox.group_state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from rhinobox.backends import make_arbiter, make_blob_store, make_catalog, shares_data_dir
from rhinobox.blobs.layout import SPOOL_DIRNAME
from rhinobox.blobs.store import BlobStore
from rhinobox.catalog.base import Catalog
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.datadir import DataDirLock
from rhinobox.group_state import metrics_dir, remove_spool_of, reset_group_dir, write_reconcile_report
from rhinobox.http.metrics import MULTIPROC_ENV
from rhinobox.instances import ServerHome
from rhinobox.jobs.manager import INTERRUPTED_AT_START
from rhinobox.jobs.sqlite import job_store_for
from rhinobox.member import Handoff
from rhinobox.reconcile import ReconcileReport, check_after_unclean_stop, finish_pending_removals, reconcile
from rhinobox.server import CANCEL_GRACE, LISTEN_BACKLOG, LISTENING_BANNER
from rhinobox.settings import Settings

__all__ = ["GroupStartFailed", "supervise"]

log = logging.getLogger(__name__)

READY_MARK: Final = b"listening on "  # in the banner a member prints once it serves
# A member that dies is started again at once; one that keeps dying within RESTART_QUICK_S of its
# start waits longer each time (doubling up to RESTART_MAX_DELAY_S), so a broken disk is not a busy loop.
RESTART_QUICK_S: Final = 10.0
RESTART_FIRST_DELAY_S: Final = 0.1
RESTART_MAX_DELAY_S: Final = 5.0
STOP_MARGIN_S: Final = 30.0  # past shutdown_timeout and the cancel grace, a member still running is killed


class GroupStartFailed(RuntimeError):
    """A serving process exited before it served: the group does not start."""


def supervise(settings: Settings) -> int:
    """Run `settings.processes` serving processes on the data directory until SIGTERM; the exit status.

    Raises DataDirLocked if another server holds the directory.
    """
    shared = shares_data_dir(settings)
    lock = DataDirLock(settings.data_dir, shared=shared)
    lock.acquire()
    try:
        listen = _bind(settings.host, settings.port)
        try:
            return asyncio.run(_Group(settings, lock, listen, ServerHome(settings.data_dir, shared=shared)).run())
        finally:
            listen.close()
    finally:
        lock.release()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket every member accepts on (bound here, so port 0 is one port for all)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True, eq=False)
class _Member:
    slot: int
    proc: asyncio.subprocess.Process
    started: float
    ready: asyncio.Future[None]
    reader: asyncio.Task[None] | None = None


@dataclass(slots=True, eq=False)
class _Group:
    settings: Settings
    lock: DataDirLock
    listen: socket.socket
    home: ServerHome  # the group's run marker, and its own directory where servers share the data directory
    members: dict[int, _Member] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    failures: int = 0  # members that exited with an error while the group was stopping

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        await loop.run_in_executor(None, self.home.begin)
        clean = False
        try:
            async with self._started_storage() as (store, catalog, report):
                status = await self._serve(store, catalog, report)
            clean = status == 0
            return status
        finally:
            await loop.run_in_executor(None, self.home.end if clean else self.home.release)

    async def _serve(self, store: BlobStore, catalog: Catalog, report: ReconcileReport) -> int:
        data_dir = self.settings.data_dir
        env = {**os.environ, MULTIPROC_ENV: os.fspath(metrics_dir(self.home.path))}
        background: asyncio.Task[None] | None = None
        try:
            try:
                await asyncio.gather(*(self._start(slot, env) for slot in range(self.settings.processes)))
            except GroupStartFailed as exc:
                log.error("%s; stopping", exc)
                return 1
            if self.stopping.is_set():
                return 0
            host, port = self.listen.getsockname()[:2]
            print(LISTENING_BANNER.format(host=host, port=port), flush=True)
            log.info("serving data in %s with %d processes", data_dir, self.settings.processes)
            if report.state == "pending":
                background = asyncio.create_task(self._reconcile(store, catalog, report))
            watchers = [asyncio.create_task(self._keep(slot, env)) for slot in self.members]
            await self.stopping.wait()
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            await self._stop_all()
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await background
        return 1 if self.failures else 0

    # -- start-up, once for the whole group ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def _started_storage(self) -> AsyncIterator[tuple[BlobStore, Catalog, ReconcileReport]]:
        """Open the store and catalog, remove stale spool files, check after an unclean stop; close after."""
        settings, home = self.settings, self.home
        marker = home.marker
        loop = asyncio.get_running_loop()
        store = make_blob_store(settings, instance_dir=home.instance_dir)
        await loop.run_in_executor(None, store.open)
        try:
            stale = await loop.run_in_executor(None, store.remove_stale_spool)
            if stale:
                log.warning("removed %d spool file(s) left by an earlier run", stale)
            stale += await loop.run_in_executor(None, home.remove_dead_spool)
            catalog = make_catalog(settings, store)
            await catalog.open()  # migrates the schema before any member opens it
            try:
                report = ReconcileReport(stale_spool_files=stale, unclean_stop=marker.check_since is not None)
                await finish_pending_removals(store, catalog, make_arbiter(catalog), settings.data_dir)
                await check_after_unclean_stop(store, catalog, marker, report, settings.data_dir)
                await self._interrupt_jobs(catalog)
                await loop.run_in_executor(None, reset_group_dir, home.path)
                await loop.run_in_executor(None, write_reconcile_report, home.path, report)
                await loop.run_in_executor(None, home.started)  # dead servers' windows checked: the next start's turn
                yield store, catalog, report
            finally:
                await catalog.close()
        finally:
            await loop.run_in_executor(None, store.close)

    async def _interrupt_jobs(self, catalog: Catalog) -> None:
        """Jobs the last run left unfinished: nothing runs them any more (members only look at leases)."""
        if not isinstance(catalog, SQLiteCatalog):
            return  # a PostgreSQL job store is shared by leases already
        jobs = job_store_for(catalog, self.settings.data_dir)
        await jobs.open()
        try:
            count = await jobs.interrupt_unfinished(time.time(), INTERRUPTED_AT_START, lease=0.0)
        finally:
            await jobs.close()
        if count:
            log.warning("marked %d unfinished job(s) from an earlier run as interrupted", count)

    async def _reconcile(self, store: BlobStore, catalog: Catalog, report: ReconcileReport) -> None:
        loop = asyncio.get_running_loop()
        write = write_reconcile_report
        try:
            task = asyncio.create_task(reconcile(store, catalog, report))
            await loop.run_in_executor(None, write, self.home.path, report)  # now `running`
            await task
        except Exception:
            log.exception("reconciliation failed")
        await loop.run_in_executor(None, write, self.home.path, report)

    # -- members ---------------------------------------------------------------------------------

    async def _start(self, slot: int, env: dict[str, str]) -> None:
        """Start the member of `slot` and wait until it serves; GroupStartFailed if it exits first."""
        fds = [self.listen.fileno()]
        for held in (self.lock.fileno, self.home.own.fileno if self.home.own is not None else None):
            if held is not None:
                fds.append(held)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rhinobox.member",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=fds,
            env=env,
        )
        member = _Member(slot, proc, time.monotonic(), asyncio.get_running_loop().create_future())
        self.members[slot] = member
        member.reader = asyncio.create_task(self._read_output(member))
        assert proc.stdin is not None
        handoff = Handoff(self.settings, self.listen.fileno(), os.getpid(), slot, self.home.instance_dir)
        with contextlib.suppress(ConnectionError):  # it died at once: its exit says why
            proc.stdin.write(pickle.dumps(handoff))
            await proc.stdin.drain()
            proc.stdin.close()
        exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
        ready: asyncio.Future[None] = member.ready
        try:
            await asyncio.wait((ready, exited), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not exited.done():
                exited.cancel()
        if not member.ready.done():
            self._forget(member)
            raise GroupStartFailed(f"serving process {slot} exited with status {proc.returncode} before serving")

    async def _read_output(self, member: _Member) -> None:
        """A member's stdout: its banner says it serves; anything else it prints is passed on."""
        stream = member.proc.stdout
        assert stream is not None
        while line := await stream.readline():
            if READY_MARK in line and not member.ready.done():
                member.ready.set_result(None)
                continue
            sys.stdout.buffer.write(line)
            sys.stdout.flush()

    async def _keep(self, slot: int, env: dict[str, str]) -> None:
        """Restart the member of `slot` whenever it exits, until the group stops."""
        delay = RESTART_FIRST_DELAY_S
        while True:
            member = self.members[slot]
            status = await member.proc.wait()
            if self.stopping.is_set():  # stopped with the group (systemd signals every process of the unit)
                return
            self._forget(member)
            lived = time.monotonic() - member.started
            log.error(
                "serving process %d (pid %d) exited with status %s after %.1fs; starting it again",
                slot,
                member.proc.pid,
                status,
                lived,
            )
            delay = RESTART_FIRST_DELAY_S if lived >= RESTART_QUICK_S else min(delay * 2, RESTART_MAX_DELAY_S)
            while True:
                await asyncio.sleep(delay if lived < RESTART_QUICK_S else 0)
                try:
                    await self._start(slot, env)
                except GroupStartFailed as exc:
                    log.error("%s; trying again in %.1fs", exc, delay)
                    delay = min(delay * 2, RESTART_MAX_DELAY_S)
                    lived = 0.0
                    continue
                break
            self.restarts += 1

    def _forget(self, member: _Member) -> None:
        """A member exited: remove its spool files and its live metric files."""
        from prometheus_client.multiprocess import mark_process_dead

        pid = member.proc.pid
        removed = remove_spool_of(self.home.path / SPOOL_DIRNAME, pid)
        if removed:
            log.warning("removed %d spool file(s) of serving process %d (pid %d)", removed, member.slot, pid)
        with contextlib.suppress(OSError):
            mark_process_dead(pid, os.fspath(metrics_dir(self.home.path)))  # type: ignore[no-untyped-call]

    async def _stop_all(self) -> None:
        """Stop accepting, SIGTERM every member, wait for each to drain (killing any that overstays)."""
        self.listen.close()  # members hold their own copies until their sites stop
        live = [m for m in self.members.values() if m.proc.returncode is None]
        for member in live:
            with contextlib.suppress(ProcessLookupError):
                member.proc.send_signal(signal.SIGTERM)
        limit = self.settings.shutdown_timeout + CANCEL_GRACE + STOP_MARGIN_S
        for member in self.members.values():  # those that stopped on a signal of their own too
            try:
                status = await asyncio.wait_for(member.proc.wait(), limit)
            except TimeoutError:
                log.error("serving process %d did not stop in %.0fs; killing it", member.slot, limit)
                member.proc.kill()
                status = await member.proc.wait()
            # One still starting (a restart) has nothing to drain, and may not handle SIGTERM yet.
            if status != 0 and not (status == -signal.SIGTERM and not member.ready.done()):
                self.failures += 1
                log.error("serving process %d exited with status %s while stopping", member.slot, status)
            self._forget(member)
        for member in self.members.values():
            if member.reader is not None:
                with contextlib.suppress(Exception):
                    await member.reader

    def _on_signal(self, sig: int) -> None:
        if self.stopping.is_set():
            log.warning("received %s again: still shutting down", signal.Signals(sig).name)
            return
        log.info("received %s: stopping %d serving process(es)", signal.Signals(sig).name, len(self.members))
        self.stopping.set()
