"""`JobManager`: runs async ingest jobs as background tasks, streams their progress, records them.

A job's row is written before its request is answered (so it can never be silently lost), each file's
result is appended as it becomes final (so an interrupted job still lists what it committed), and the
final state is written before live watchers get their last event.

With a shared store (several nodes on one PostgreSQL), each node renews a lease on the jobs it runs and
marks interrupted the jobs whose lease ran out (their node died); a watcher of a job that runs on
another node follows it by polling the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rhinobox.errors import Overloaded, RhinoBoxError
from rhinobox.jobs.model import FileResult, Job, JobError, JobState
from rhinobox.jobs.store import JobStore

__all__ = [
    "EVENT_END",
    "EVENT_PROGRESS",
    "EVENT_STATE",
    "HEARTBEAT_INTERVAL",
    "LEASE_HEARTBEATS",
    "WATCHERS_PER_JOB_MAX",
    "WATCHERS_TOTAL_MAX",
    "WATCHER_QUEUE_MAX",
    "JobEvent",
    "JobManager",
    "JobWork",
    "ResultSink",
    "WatchStream",
]

log = logging.getLogger(__name__)

EVENT_STATE: Final = "state"  # always first: where the job stands when the watcher arrives
EVENT_PROGRESS: Final = "progress"  # one per file, once its result is final
EVENT_END: Final = "end"  # always last: the final record, with every result
SWEEP_INTERVAL_MAX: Final = 60.0  # seconds between expiry sweeps (less when the TTL is shorter)
INTERRUPTED_AT_START: Final = JobError("interrupted", "the server stopped before the job finished")
INTERRUPTED_AT_STOP: Final = JobError("interrupted", "the server shut down before the job finished")
INTERRUPTED_LEASE: Final = JobError("interrupted", "the node running the job stopped before it finished")
HEARTBEAT_INTERVAL: Final = 2.0  # seconds between lease renewals of this node's jobs (shared stores)
LEASE_HEARTBEATS: Final = 3  # a job whose node missed this many heartbeats is taken for abandoned
FOLLOW_INTERVAL: Final = 0.5  # seconds between store reads for a watcher of another node's job
# Event streams cost a socket and a share of every event's writes each: bounded per job and per node.
WATCHERS_PER_JOB_MAX: Final = 32
WATCHERS_TOTAL_MAX: Final = 256
# Events a watcher may lag behind (a commit step sends up to 1,000 progress events at once); one that
# falls further behind is disconnected and, reconnecting, starts again from the current state.
WATCHER_QUEUE_MAX: Final = 2048
FINAL_SAVE_ATTEMPTS: Final = 3  # tries at recording a job's end before leaving it to the next tick
FINAL_SAVE_RETRY_DELAY: Final = 0.2  # seconds, times the attempt number

ResultSink = Callable[[FileResult], None]
JobWork = Callable[[ResultSink], Awaitable[None]]


@dataclass(slots=True, eq=False)
class JobEvent:
    """One thing a watcher should hear: `kind` is state, progress or end.

    One event object goes to every watcher of a job, so it is serialized once (`frame`), not per watcher:
    an `end` event of a large job is hundreds of kilobytes of JSON.
    """

    kind: str
    data: dict[str, Any]
    _frame: bytes | None = field(default=None, repr=False)

    def frame(self) -> bytes:
        """The event as Server-Sent Events lines (`event:` and `data:`, then the blank line), cached."""
        if self._frame is None:
            data = json.dumps(self.data, separators=(",", ":"))
            self._frame = f"event: {self.kind}\ndata: {data}\n\n".encode()
        return self._frame


class _Stop:
    """Sent to a watcher whose stream must end without an `end` event (shutdown, or it fell behind)."""


_STOP: Final = _Stop()
WatchItem = JobEvent | _Stop


@dataclass(slots=True, eq=False)
class _LiveJob:
    job: Job
    task: asyncio.Task[None] | None = None
    watchers: set[asyncio.Queue[WatchItem]] = field(default_factory=set)  # each bounded: WATCHER_QUEUE_MAX
    unsaved: list[FileResult] = field(default_factory=list)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    finishing: bool = False
    save_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JobManager:
    """Owns every running job of one app; `close` lets them finish (up to `grace`) or interrupts them."""

    def __init__(
        self,
        store: JobStore,
        *,
        ttl: float,
        grace: float,
        clock: Callable[[], float] = time.time,
        heartbeat: float = HEARTBEAT_INTERVAL,
        follow_interval: float = FOLLOW_INTERVAL,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._grace = grace
        self._clock = clock
        self._heartbeat = heartbeat
        self._lease = heartbeat * LEASE_HEARTBEATS
        self._follow_interval = follow_interval
        self._live: dict[str, _LiveJob] = {}
        self._owned: set[str] = set()  # created here and not yet ended: the jobs this node holds a lease on
        self._followers: set[asyncio.Event] = set()  # stop signals of watchers following other nodes' jobs
        self._watching: dict[str, int] = {}  # open event streams per job id (any kind)
        self._unrecorded: dict[str, _LiveJob] = {}  # ended here, but the end is not in the store yet
        self._sweeper: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Mark jobs an earlier process left unfinished as interrupted, drop expired ones, start sweeping."""
        now = self._clock()
        error = INTERRUPTED_LEASE if self._store.shared else INTERRUPTED_AT_START
        interrupted = await self._store.interrupt_unfinished(now, error, lease=self._lease)
        if interrupted:
            log.warning("marked %d unfinished job(s) from an earlier run as interrupted", interrupted)
        await self._store.expire(now - self._ttl)
        self._sweeper = asyncio.create_task(self._sweep(), name="rhinobox-job-sweeper")
        self._renewer = asyncio.create_task(self._renew_leases(), name="rhinobox-job-leases")

    async def create(self) -> Job:
        """A new queued job, durably recorded; `start` it once its input is received, or `discard` it."""
        now = self._clock()
        job = Job(id=uuid.uuid4().hex, state=JobState.QUEUED, created_at=now, updated_at=now)
        self._owned.add(job.id)  # leased from now on: receiving a large body can take a while
        try:
            await self._store.save(job, [])
        except BaseException:
            self._owned.discard(job.id)
            raise
        return job

    async def discard(self, job: Job) -> None:
        """Forget a job whose request failed before it was answered (the client never saw its id)."""
        self._owned.discard(job.id)
        try:
            await self._store.delete(job.id)
        except Exception:
            log.exception("could not delete job %s; it will read as interrupted after a restart", job.id)

    def start_job(self, job: Job, *, total: int, received_bytes: int, work: JobWork) -> None:
        """Run `work` in the background; it reports each file's result through the sink it is given."""
        job.total, job.received_bytes = total, received_bytes
        live = _LiveJob(job)
        self._live[job.id] = live
        live.task = asyncio.create_task(self._run(live, work), name=f"rhinobox-job-{job.id}")

    @property
    def watchers(self) -> int:
        """Event streams open now (all jobs)."""
        return sum(self._watching.values())

    def watchers_of(self, job_id: str) -> int:
        return self._watching.get(job_id, 0)

    async def get(self, job_id: str) -> Job | None:
        live = self._live.get(job_id) or self._unrecorded.get(job_id)
        if live is not None:
            return live.job
        job = await self._store.load(job_id, results=False)  # a running job's answer lists no results
        if job is None or not job.final:
            return job
        return await self._store.load(job_id)

    async def events(self, job_id: str, idle: float) -> WatchStream | None:
        """The job's events from now on (state first, end last); None items mark `idle` quiet seconds.

        Returns None for an unknown job; raises `Overloaded` past WATCHERS_PER_JOB_MAX streams on the job
        or WATCHERS_TOTAL_MAX in all. A job that already ended yields its state and its end; a job
        another node runs (shared store) is followed in the store. The caller must `aclose` the stream
        (whether or not it iterated it): that is what lets its place go.
        """
        self._admit(job_id)
        live = self._live.get(job_id)
        if live is None:
            ended = self._unrecorded.get(job_id)
            job = ended.job if ended is not None else await self._store.load(job_id)
            if job is None:
                return None
            self._admit(job_id)  # again: the load above awaited, and others may have come in meanwhile
            if job.final or not self._store.shared:
                return self._stream(job_id, _ended(job), lambda: None)
            return self._stream(job_id, self._follow(job, idle), lambda: None)
        queue: asyncio.Queue[WatchItem] = asyncio.Queue(WATCHER_QUEUE_MAX)
        # Snapshot and subscription happen in one step of the loop: no event falls between them.
        first = JobEvent(EVENT_STATE, live.job.summary())
        live.watchers.add(queue)
        return self._stream(job_id, _watch(live, queue, first, idle), lambda: live.watchers.discard(queue))

    def _admit(self, job_id: str) -> None:
        if self.watchers_of(job_id) >= WATCHERS_PER_JOB_MAX:
            raise Overloaded(f"this job has {WATCHERS_PER_JOB_MAX} event streams already; retry later")
        if self.watchers >= WATCHERS_TOTAL_MAX:
            raise Overloaded(f"{WATCHERS_TOTAL_MAX} event streams are open already; retry later")

    def _stream(
        self, job_id: str, events: AsyncGenerator[JobEvent | None, None], unsubscribe: Callable[[], None]
    ) -> WatchStream:
        self._watching[job_id] = self._watching.get(job_id, 0) + 1

        def release() -> None:
            unsubscribe()
            left = self._watching.get(job_id, 0) - 1
            if left > 0:
                self._watching[job_id] = left
            else:
                self._watching.pop(job_id, None)

        return WatchStream(events, release)

    def end_streams(self) -> None:
        """Ask every watcher stream to end (the server is shutting down; jobs keep running)."""
        for live in self._live.values():
            for queue in list(live.watchers):
                _send(live, queue, _STOP)
        for stop in self._followers:
            stop.set()

    async def close(self) -> None:
        """Give running jobs up to `grace` seconds, interrupt the rest, record every end, stop sweeping."""
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._record_unrecorded()
        for job_id in self._unrecorded:
            log.error("could not record the end of job %s; the next start marks it interrupted", job_id)
        for background in (self._sweeper, self._renewer):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        self._sweeper = self._renewer = None

    # -- running ---------------------------------------------------------------------------

    async def _run(self, live: _LiveJob, work: JobWork) -> None:
        job = live.job
        job.state, job.updated_at = JobState.RUNNING, self._clock()
        live.dirty.set()
        saver = asyncio.create_task(self._save_while_running(live))
        state, error = JobState.DONE, None
        try:
            await work(lambda result: self._on_result(live, result))
        except asyncio.CancelledError:
            state, error = JobState.INTERRUPTED, INTERRUPTED_AT_STOP
        except RhinoBoxError as exc:
            state, error = JobState.FAILED, JobError(exc.code, exc.message)
        except Exception:
            log.exception("job %s failed", job.id)
            state, error = JobState.FAILED, JobError("internal", "the job failed on an internal error")
        # The end is known from here on (in memory): a cancel or a store failure while recording it
        # leaves the job in `_unrecorded`, recorded at the next tick or at shutdown, never `running`.
        live.finishing = True
        live.dirty.set()
        job.state, job.error = state, error
        job.finished_at = job.updated_at = self._clock()
        recorded = False
        try:
            await asyncio.gather(saver, return_exceptions=True)
            recorded = await self._save_final(live)
        finally:
            self._end(live, recorded)

    async def _save_final(self, live: _LiveJob) -> bool:
        for attempt in range(1, FINAL_SAVE_ATTEMPTS + 1):
            try:
                await self._save(live)
                return True
            except Exception:
                log.exception("could not record the end of job %s (attempt %d)", live.job.id, attempt)
            if attempt < FINAL_SAVE_ATTEMPTS:
                await asyncio.sleep(FINAL_SAVE_RETRY_DELAY * attempt)
        return False

    def _end(self, live: _LiveJob, recorded: bool) -> None:
        """Send `end` to the watchers and let the job go (or keep it until its end is recorded)."""
        job = live.job
        if live.watchers:
            end = JobEvent(EVENT_END, job.as_json())
            for queue in list(live.watchers):
                _send(live, queue, end)
        del self._live[job.id]
        if recorded:
            self._owned.discard(job.id)
        else:
            self._unrecorded[job.id] = live  # still served from memory, still leased

    async def _record_unrecorded(self) -> None:
        """Record the ends that could not be saved when their job ended."""
        for job_id, live in list(self._unrecorded.items()):
            try:
                await self._save(live)
            except Exception:
                log.exception("could not record the end of job %s; will retry", job_id)
                continue
            self._unrecorded.pop(job_id, None)
            self._owned.discard(job_id)

    def _on_result(self, live: _LiveJob, result: FileResult) -> None:
        job = live.job
        job.count(result)
        job.updated_at = self._clock()
        job.results.append(result)
        live.unsaved.append(result)
        live.dirty.set()
        if live.watchers:
            event = JobEvent(EVENT_PROGRESS, {**job.summary(), "result": result})
            for queue in list(live.watchers):
                _send(live, queue, event)

    async def _save_while_running(self, live: _LiveJob) -> None:
        """Write progress as fast as the catalog takes it; results arriving meanwhile share the next write."""
        while True:
            await live.dirty.wait()
            if live.finishing:
                return
            live.dirty.clear()
            try:
                await self._save(live)
            except Exception:
                log.exception("could not record progress of job %s", live.job.id)

    async def _save(self, live: _LiveJob) -> None:
        async with live.save_lock:
            rows, live.unsaved = live.unsaved, []
            try:
                await self._store.save(live.job.snapshot(), rows)
            except BaseException:
                live.unsaved[:0] = rows
                raise

    async def _sweep(self) -> None:
        interval = min(float(self._ttl), SWEEP_INTERVAL_MAX)
        while True:
            await asyncio.sleep(interval)
            try:
                expired = await self._store.expire(self._clock() - self._ttl)
            except Exception:
                log.exception("could not expire old jobs")
                continue
            if expired:
                log.info("expired %d job(s) older than %ss", expired, self._ttl)

    async def _renew_leases(self) -> None:
        """Record ends that failed to save; with a shared store, keep this node's jobs leased and
        interrupt jobs whose node stopped renewing theirs."""
        while True:
            await asyncio.sleep(self._heartbeat)
            await self._record_unrecorded()
            if not self._store.shared:
                continue
            try:
                await self._store.heartbeat(sorted(self._owned))
                abandoned = await self._store.interrupt_unfinished(self._clock(), INTERRUPTED_LEASE, lease=self._lease)
            except Exception:
                log.exception("could not renew job leases")
                continue
            if abandoned:
                log.warning("marked %d job(s) of a node that stopped as interrupted", abandoned)

    async def _reread(self, job_id: str, known: int) -> Job | None:
        """The job as stored; its results are read only once there are more than `known` or it ended."""
        job = await self._store.load(job_id, results=False)
        if job is None or (job.done <= known and not job.final):
            return job
        return await self._store.load(job_id)

    async def _follow(self, first: Job, idle: float) -> AsyncGenerator[JobEvent | None, None]:
        """Another node's job, read from the store until it ends: state, a progress per file, end."""
        stop = asyncio.Event()
        self._followers.add(stop)
        try:
            yield JobEvent(EVENT_STATE, first.summary())
            recorded = list(first.results)
            seen = {int(r["index"]) for r in recorded}
            quiet_since = time.monotonic()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._follow_interval)
                if stop.is_set():
                    return
                try:
                    job = await self._reread(first.id, len(recorded))
                except Exception:
                    log.exception("could not read job %s", first.id)
                    continue
                if job is None:
                    return  # expired (or deleted) meanwhile
                new = [r for r in job.results if int(r["index"]) not in seen]
                for event in _progress(job, recorded, new):
                    yield event
                seen.update(int(r["index"]) for r in new)
                recorded.extend(new)
                if job.final:
                    yield JobEvent(EVENT_END, job.as_json())
                    return
                if new:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= idle:
                    quiet_since = time.monotonic()
                    yield None
        finally:
            self._followers.discard(stop)


class WatchStream:
    """A watcher's events, as an async iterator; `aclose` lets its place go even if never iterated."""

    def __init__(self, events: AsyncGenerator[JobEvent | None, None], release: Callable[[], None]) -> None:
        self._events = events
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> JobEvent | None:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
        await self._events.aclose()


def _send(live: _LiveJob, queue: asyncio.Queue[WatchItem], item: WatchItem) -> None:
    """Queue `item` for one watcher; one that fell WATCHER_QUEUE_MAX events behind is cut off instead."""
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        live.watchers.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(_STOP)


def _progress(job: Job, earlier: Sequence[FileResult], new: Sequence[FileResult]) -> Iterator[JobEvent]:
    """A progress event per newly recorded result, with the counts as they stood right after it."""
    state = JobState.RUNNING if job.final else job.state  # `end` is what announces the final state
    tally = dataclasses.replace(
        job,
        state=state,
        done=0,
        stored=0,
        duplicate=0,
        failed=0,
        processed_bytes=0,
        finished_at=None,
        error=None,
        results=[],
    )
    for result in earlier:
        tally.count(result)
    for result in new:
        tally.count(result)
        yield JobEvent(EVENT_PROGRESS, {**tally.summary(), "result": result})


async def _ended(job: Job) -> AsyncGenerator[JobEvent | None, None]:
    yield JobEvent(EVENT_STATE, job.summary())
    yield JobEvent(EVENT_END, job.as_json())


async def _watch(
    live: _LiveJob, queue: asyncio.Queue[WatchItem], first: JobEvent, idle: float
) -> AsyncGenerator[JobEvent | None, None]:
    try:
        yield first
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), idle)
            except TimeoutError:
                yield None
                continue
            if isinstance(item, _Stop):
                return
            yield item
            if item.kind == EVENT_END:
                return
    finally:
        live.watchers.discard(queue)
