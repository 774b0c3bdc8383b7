"""The SQLite catalog's writer: one thread that alone owns the write connection, fed by a queue.

Whatever is queued when the thread wakes runs as one transaction (one commit, one durable step), and its
callers are answered with one hop back to their event loop: a group of N writes costs two thread hops,
where one aiosqlite round trip per statement cost 5 or more. With `sync`, the connection commits
without its own fsync and the thread calls `sync` (a filesystem sync that covers the WAL too) before
it answers the group.

The thread also checkpoints the WAL, between groups: only a checkpoint that has copied every frame
before the next write transaction begins lets SQLite start the WAL over from its beginning. One run on
another connection, beside a steady stream of commits, never catches up; the WAL then grows by new
blocks until the autocheckpoint backstop stalls a commit for tens of milliseconds (at 760-890 single
uploads a second the WAL grew 41 MB in 3 s and a record's p99 was 11-33 ms; checkpointing here kept
the WAL near 12 MiB and cut the client's p99 at 760/s from 13-19 ms to 7-8 ms).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Self, TypeVar, cast

from rhinobox.catalog.sqlite_errors import sqlite_errors
from rhinobox.errors import RhinoBoxError, StorageError, storage_failure

__all__ = ["CLOSE_DRAIN_SECONDS", "MergeableJob", "SQLiteWriter", "WriteJob"]

log = logging.getLogger(__name__)

CLOSE_DRAIN_SECONDS: Final = 5.0  # how long close lets queued writes commit before failing them
CLOSE_STOP_SECONDS: Final = 1.0  # then how long it waits for the interrupted thread to stop
# A checkpoint waits for an idle moment (no write queued) until this many checkpoint periods have
# passed; then it runs before the next group, so a writer that is never idle still checkpoints.
CHECKPOINT_OVERDUE_PERIODS: Final = 4
WRITE_DOING: Final = "write to the database"
# Another process's writer holding the database's write lock (several serving processes): retried
# every 0.2 ms doubling to 5 ms (SQLite's own busy handler sleeps 1 ms, then 2, 5, 10 ... 100 ms,
# coarse against commits that hold the lock for about a millisecond), for up to 30 s.
LOCK_RETRY_FIRST_S: Final = 0.0002
LOCK_RETRY_MAX_S: Final = 0.005
LOCK_WAIT_LIMIT_S: Final = 30.0  # what a failed write's error says it could not do

T = TypeVar("T")
WriteJob = Callable[[sqlite3.Connection], T]


class MergeableJob(ABC):
    """A write the writer merges with the other queued jobs of its class: one set of statements per group."""

    __slots__ = ()

    @classmethod
    @abstractmethod
    def run_merged(cls, db: sqlite3.Connection, jobs: Sequence[Self]) -> None:
        """Do the writes of all of `jobs` (one or more), in their order."""

    def __call__(self, db: sqlite3.Connection) -> None:
        self.run_merged(db, [self])


@dataclass(slots=True)
class _Entry:
    job: WriteJob[object]
    future: asyncio.Future[object]
    loop: asyncio.AbstractEventLoop
    committed: bool = False  # set under the commit lock: close() never fails a write that committed


# An entry with its result, or with the error to raise in its caller.
_Outcome = tuple[_Entry, object, BaseException | None]


class SQLiteWriter:
    """Runs write jobs on its own thread, each group of queued jobs in one transaction.

    `connect` opens the write connection; it runs on the thread, which alone uses the connection.
    Every submitted job gets an answer: its result, its own error, or a StorageError if the writer
    closes or stops before the job ran. With `checkpoint_seconds`, a PASSIVE checkpoint runs that
    long after the first commit it has not covered, at the next moment no write is queued. With
    `sync`, no job of a group is answered until `sync` returned after the group's commits; if it
    fails, every job of the group gets a storage error (its commit stands, but is not known durable).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        name: str = "rhinobox-sqlite-writer",
        checkpoint_seconds: float | None = None,
        sync: Callable[[], None] | None = None,
    ) -> None:
        self._connect = connect
        self._sync = sync
        self._sync_failure: Exception | None = None  # once set, no group runs: its rows could not be made durable
        self._name = name
        self._checkpoint_seconds = checkpoint_seconds
        self._uncheckpointed_since: float | None = None  # monotonic time of the first commit not checkpointed
        self.checkpoints = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[_Entry] = []
        # Writes of the current turn of each caller's loop, handed over together (`_hand_over`).
        self._staged: dict[asyncio.AbstractEventLoop, list[_Entry]] = {}
        self._running: list[_Entry] = []
        self._accepting = False
        self._closing = False
        self._abandoned = False
        self._stopped = False
        self._stop_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()  # keeps interrupt() off a connection being closed
        # Held around each COMMIT and by _abandon: a write is either committed or failed, never both.
        self._commit_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.commits = 0
        # Time spent getting the database's write lock (another process's writer holding it: several
        # serving processes on one data directory), so the cost of sharing one file shows in /metrics.
        self.lock_wait_seconds = 0.0

    @property
    def queued(self) -> int:
        """Writes waiting for the thread, not counting the group it is running."""
        return len(self._pending) + sum(len(staged) for staged in list(self._staged.values()))

    async def start(self) -> None:
        """Start the thread and open its connection; raise what opening it raised."""
        if self._thread is not None:
            raise RuntimeError("a writer starts once")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self._name, daemon=True)
        self._thread.start()
        await asyncio.wrap_future(ready)

    async def submit(self, job: WriteJob[T]) -> T:
        """Run `job` on the thread inside the next group's transaction and return its result.

        The result crosses to the caller's thread: a plain value, never a cursor of the connection.
        Writes submitted in one turn of the caller's event loop reach the thread together, with one
        wake-up: waking a thread is a system call that costs the loop tens of microseconds here.
        """
        loop = asyncio.get_running_loop()
        if not self._accepting:
            raise StorageError(self._refusal())
        future: asyncio.Future[object] = loop.create_future()
        staged = self._staged.get(loop)
        if staged is None:
            staged = self._staged[loop] = []
            loop.call_soon(self._hand_over, loop)
        staged.append(_Entry(job, future, loop))
        return cast(T, await future)

    def _refusal(self) -> str:
        return "the catalog is closed" if self._closing or self._stopped else "the catalog is not open"

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Queue this loop's staged writes for the thread (on that loop, at the end of its turn)."""
        entries = self._staged.pop(loop, None)
        if not entries:
            return
        with self._wake:
            accepted = self._accepting
            if accepted:
                woken = bool(self._pending)  # else the thread was woken already, or will find these when done
                self._pending.extend(entries)
                if not woken:
                    self._wake.notify()
        if not accepted:
            _settle([(entry, None, StorageError(self._refusal())) for entry in entries])

    async def close(self, drain_seconds: float = CLOSE_DRAIN_SECONDS) -> None:
        """Refuse new writes, let the queued ones commit, and join the thread.

        Writes still unanswered after `drain_seconds` (a job or a lock that will not finish) fail with
        a StorageError, so no caller waits on a writer that is going away; a write already committed
        is answered by the thread, after its `sync` if there is one.
        """
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()
        self._hand_over(loop)  # writes submitted before close are queued, not refused
        with self._wake:
            self._accepting = False
            self._closing = True
            if self._stopped or self._thread is None:
                stopped.set_result(None)
            else:
                self._stop_waiters.append((loop, stopped))
            self._wake.notify()
        if not await _settled(stopped, drain_seconds):
            self._abandon(drain_seconds)
            if not await _settled(stopped, CLOSE_STOP_SECONDS):
                log.error("the catalog writer thread did not stop; leaving it behind")
                return
        if self._thread is not None:
            self._thread.join()  # it has signalled its last act: this returns at once

    def _abandon(self, drain_seconds: float) -> None:
        """Fail every write still unanswered, and interrupt the statement the thread is running."""
        with self._commit_lock, self._lock:  # a COMMIT under way finishes first, and its writes stand
            self._abandoned = True
            left = [entry for entry in self._pending + self._running if not entry.committed]
            self._pending = []
        with self._db_lock:
            if self._db is not None:
                self._db.interrupt()
        message = f"the catalog closed before this write was confirmed (waited {drain_seconds:g} s)"
        _answer([(entry, None, StorageError(message)) for entry in left])

    # -- on the writer thread ----------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        if not ready.set_running_or_notify_cancel():  # start() was cancelled: nobody wants the thread
            self._stop(None)
            return
        try:
            db = self._connect()
        except BaseException as exc:
            self._stop(None)
            ready.set_exception(_as_error(exc))
            return
        with self._lock:
            self._db = db
            self._accepting = not self._closing
        ready.set_result(None)
        try:
            while (group := self._next_group(db)) is not None:
                _answer(self._run_group_safely(db, group))
                with self._lock:  # only now: should answering fail, _stop still answers the group
                    self._running = []
        except BaseException:  # a fault in the writer itself: _stop answers everyone still waiting
            log.exception("the catalog writer thread failed")
        finally:
            self._stop(db)

    def _next_group(self, db: sqlite3.Connection) -> list[_Entry] | None:
        """Everything queued, once there is something; None once closing and drained.

        A checkpoint that is due runs first when nothing is queued, or once it is overdue.
        """
        while True:
            with self._wake:
                due_in = self._checkpoint_due_in()
                overdue = (
                    due_in is not None
                    and self._checkpoint_seconds is not None
                    and (due_in <= -(CHECKPOINT_OVERDUE_PERIODS - 1) * self._checkpoint_seconds)
                )
                if self._pending and not overdue:
                    self._running, self._pending = self._pending, []
                    return self._running
                if not self._pending:
                    if self._closing:
                        return None
                    if due_in is None or due_in > 0:
                        self._wake.wait(due_in)
                        continue
            self._checkpoint(db)

    def _checkpoint_due_in(self) -> float | None:
        """Seconds until the next checkpoint is due (<= 0: due now); None if there is nothing to copy."""
        if self._checkpoint_seconds is None or self._uncheckpointed_since is None:
            return None
        return self._uncheckpointed_since + self._checkpoint_seconds - time.monotonic()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        began = time.monotonic()
        self._uncheckpointed_since = None
        try:
            busy, in_wal, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if not self._abandoned:  # the next commit makes it due again; the backstop still holds
                log.warning("WAL checkpoint failed: %s", exc)
            return
        self.checkpoints += 1
        if busy or copied < in_wal:  # a reader's older snapshot held it short: the WAL cannot start over
            self._uncheckpointed_since = began

    def _run_group_safely(self, db: sqlite3.Connection, group: list[_Entry]) -> list[_Outcome]:
        if self._sync_failure is not None:
            return [(entry, None, _durability_error(self._sync_failure)) for entry in group]
        try:
            return self._made_durable(self._run_group(db, group))
        except BaseException as exc:  # a fault here must not end the thread and strand its callers
            log.exception("the catalog writer could not run a group of writes")
            return [(entry, None, exc) for entry in group]

    def _made_durable(self, outcomes: list[_Outcome]) -> list[_Outcome]:
        """With `sync`, the group's commits are durable once it returns: no answer goes out before."""
        if self._sync is None or all(error is not None for _, _, error in outcomes):
            return outcomes
        try:
            self._sync()
        except Exception as exc:
            # A sync that failed once is never trusted again (LocalBlobStore.sync): later groups are
            # refused before they commit, rather than committed for callers who are told they failed.
            log.error("the catalog's shared sync failed: %s; refusing writes until restarted", exc)
            self._sync_failure = exc
            return [(entry, None, error or _durability_error(exc)) for entry, _, error in outcomes]
        return outcomes

    def _run_group(self, db: sqlite3.Connection, group: list[_Entry]) -> list[_Outcome]:
        """One transaction for the group; if it fails, each job is retried alone so the others commit.

        A job's SQLite error reaches its caller as the domain's (sqlite_errors): a full disk is a 507.
        """
        try:
            results = self._transaction(db, group)
        except BaseException as exc:
            if len(group) == 1:
                return [(group[0], None, sqlite_errors.translated(exc, WRITE_DOING))]
            return [outcome for entry in group for outcome in self._run_group(db, [entry])]
        return [(entry, result, None) for entry, result in zip(group, results, strict=True)]

    def _transaction(self, db: sqlite3.Connection, group: list[_Entry]) -> list[object]:
        if self._abandoned:
            raise StorageError("the catalog closed before this write ran")
        self._begin(db)
        try:
            results = _run_jobs(db, [entry.job for entry in group])
            with self._commit_lock:  # close() gave up on these writes meanwhile: they must not land
                if self._abandoned:
                    raise StorageError("the catalog closed before this write was committed")
                db.execute("COMMIT")
                for entry in group:
                    entry.committed = True
        except BaseException:
            if db.in_transaction:  # SQLite rolls some failures back by itself
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        self.commits += 1
        if self._uncheckpointed_since is None:
            self._uncheckpointed_since = time.monotonic()
        return results

    def _begin(self, db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE; while another process's writer holds the write lock, retry with backoff and
        count the wait (`lock_wait_seconds`). A connection with a busy timeout waits inside SQLite
        instead, uncounted; the catalog's writer has none, so its waits are measured and short."""
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
        began = time.monotonic()
        delay = LOCK_RETRY_FIRST_S
        try:
            while True:
                time.sleep(delay)
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() - began > LOCK_WAIT_LIMIT_S:
                        raise
                delay = min(delay * 2, LOCK_RETRY_MAX_S)
        finally:
            self.lock_wait_seconds += time.monotonic() - began

    def _stop(self, db: sqlite3.Connection | None) -> None:
        """Close the connection, fail whatever is still queued, and tell close() the thread is done."""
        if db is not None:
            with self._db_lock, contextlib.suppress(sqlite3.Error):
                self._db = None
                db.close()
        with self._lock:
            self._stopped = True
            self._accepting = False
            left, self._pending, self._running = self._pending + self._running, [], []
            waiters, self._stop_waiters = self._stop_waiters, []
        _answer([(entry, None, StorageError("the catalog writer stopped before this write ran")) for entry in left])
        for loop, future in waiters:
            _call_soon(loop, _resolve, future)


def _run_jobs(db: sqlite3.Connection, jobs: list[WriteJob[object]]) -> list[object]:
    """Mergeable jobs first, one run per class, then the others in their order."""
    merged: dict[type[MergeableJob], list[MergeableJob]] = {}
    for job in jobs:
        if isinstance(job, MergeableJob):
            merged.setdefault(type(job), []).append(job)
    for kind, same in merged.items():
        kind.run_merged(db, same)
    return [None if isinstance(job, MergeableJob) else _run_job(db, job) for job in jobs]


def _run_job(db: sqlite3.Connection, job: WriteJob[object]) -> object:
    result = job(db)
    if inspect.iscoroutine(result):  # an `async def` job would do nothing here: refuse it loudly
        result.close()
        raise TypeError(f"write job {job!r} returned a coroutine; a job must do its writes before returning")
    return result


def _answer(outcomes: list[_Outcome]) -> None:
    """Settle the callers' futures with one call into each of their event loops."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        _call_soon(loop, _settle, settled)


def _durability_error(exc: Exception) -> RhinoBoxError:
    """A new error each time (one shared instance would gather every raise's traceback)."""
    doing = "make the catalog write durable"
    return storage_failure(exc, doing) if isinstance(exc, OSError) else StorageError(f"could not {doing} ({exc})")


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None], arg: object) -> None:
    """Never raises: the writer thread calls this, and must outlive any one caller's loop."""
    try:
        loop.call_soon_threadsafe(callback, arg)
    except RuntimeError:  # the loop is closed: nobody is left waiting there
        pass
    except Exception:
        log.exception("could not answer a catalog write")


def _settle(outcomes: list[_Outcome]) -> None:
    for entry, result, error in outcomes:
        if entry.future.done():  # the caller was cancelled, or close() already failed it
            continue
        if error is None:
            entry.future.set_result(result)
        else:
            entry.future.set_exception(_as_error(error))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _as_error(exc: BaseException) -> Exception:
    """`exc`, unless a future cannot carry it (StopIteration) or it would unwind the caller's loop."""
    if isinstance(exc, Exception) and not isinstance(exc, StopIteration):
        return exc
    error = RuntimeError(f"a catalog write job raised {exc!r}")
    error.__cause__ = exc
    return error


async def _settled(future: asyncio.Future[None], seconds: float) -> bool:
    done, _ = await asyncio.wait([future], timeout=seconds)
    return bool(done)
