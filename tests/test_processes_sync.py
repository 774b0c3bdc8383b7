"""The serving processes of a group take turns at the filesystem sync, and one sync covers them all.

Two stores on one data directory, each with its own descriptors, stand for two serving processes (a
`flock` excludes another open file, in this process as in another); the last tests run a real group.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import aiohttp
import pytest

import rhinobox.blobs.local as local_module
import rhinobox.blobs.shared_sync as shared_sync_module
from rhinobox.blobs import fsops
from rhinobox.blobs.local import LocalBlobStore
from rhinobox.blobs.shared_sync import (
    GROUP_DIRNAME,
    LOCK_WAIT_S,
    SYNC_RECORD_FILENAME,
    SharedSync,
    SyncCounts,
    create_sync_record,
    read_sync_counts,
)
from tests.helpers import blake3_hex, first_sync_fails, form, wait_until
from tests.samples import make_sample
from tests.server_process import RhinoBoxProcess

WAIT_S: Final = 10.0  # bound on waiting for a thread to block on the record's lock: a hang fails the test
# "Within a few seconds": a turn kept waiting by a stalled holder answers after LOCK_WAIT_S (1 s) and
# a sync, with slack for this shared machine's load.
STALLED_ANSWER_S: Final = 6.0
SHARED_SYNC_LOGGER: Final = "rhinobox.blobs.shared_sync"


@pytest.fixture
def group_dir(tmp_path: Path) -> Path:
    """A group's record as the supervisor leaves it, naming this test's parent as the supervisor."""
    path = tmp_path / GROUP_DIRNAME
    path.mkdir()
    create_sync_record(path, supervisor=os.getppid())
    return path


@pytest.fixture
def patient_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turns wait for the record's lock as long as a test holds it (past LOCK_WAIT_S they would sync alone)."""
    monkeypatch.setattr(shared_sync_module, "LOCK_WAIT_S", WAIT_S)


@pytest.fixture
def syncfs_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each `syncfs` the stores run, by descriptor."""
    calls: list[int] = []
    sync = fsops.sync_filesystem

    def counted(fd: int) -> None:
        calls.append(fd)
        sync(fd)

    monkeypatch.setattr(local_module, "sync_filesystem", counted)
    return calls


def _open_store(data_dir: Path) -> LocalBlobStore:
    store = LocalBlobStore(data_dir, durable=True)
    store.open()
    return store


@pytest.fixture
def two_stores(tmp_path: Path, group_dir: Path) -> Iterator[tuple[LocalBlobStore, LocalBlobStore]]:
    first, second = _open_store(tmp_path), _open_store(tmp_path)
    yield first, second
    first.close()
    second.close()


def _commit(store: LocalBlobStore, content: bytes) -> str:
    spooled = store.spool_dir / f"{blake3_hex(content)[:16]}.{id(store)}"
    spooled.write_bytes(content)
    digest = blake3_hex(content)
    assert store.commit(str(spooled), digest)
    return digest


def _waiters_on(path: Path) -> int:
    """Processes' (or descriptors') requests blocked on a lock of `path` (the `->` lines of /proc/locks)."""
    inode = f":{os.stat(path).st_ino} "
    return sum(1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line and inode in line)


async def _flush_both_behind_a_running_sync(
    group_dir: Path, first: LocalBlobStore, second: LocalBlobStore
) -> list[BaseException | None]:
    """Both stores ask for a sync while a third process's sync runs (the record locked), then it ends."""
    record = group_dir / SYNC_RECORD_FILENAME
    with open(record, "rb") as running:
        fcntl.flock(running.fileno(), fcntl.LOCK_EX)
        flushes = [asyncio.ensure_future(first.flush()), asyncio.ensure_future(second.flush())]
        deadline = time.monotonic() + WAIT_S
        while _waiters_on(record) < 2:
            assert time.monotonic() < deadline, "the flushes never reached the record's lock"
            await asyncio.sleep(0.01)
    return list(await asyncio.gather(*flushes, return_exceptions=True))


async def test_one_sync_covers_the_other_process_uploads(
    two_stores: tuple[LocalBlobStore, LocalBlobStore], group_dir: Path, syncfs_calls: list[int], patient_turns: None
) -> None:
    """Both processes asked before either began: the first to get its turn syncs, the other reuses it."""
    first, second = two_stores
    digests = [_commit(first, b"first's upload"), _commit(second, b"second's upload")]
    # Each process's first sync certifies the span since the other opened (see the record's docstring).
    first.sync()
    second.sync()
    before = read_sync_counts(group_dir)
    assert await _flush_both_behind_a_running_sync(group_dir, first, second) == [None, None]
    assert read_sync_counts(group_dir) == SyncCounts(before.calls + 1, before.skips + 1)
    assert len(syncfs_calls) == before.calls + 1
    assert not first.needs_flush(digests[0])
    assert not second.needs_flush(digests[1])


async def test_a_sync_begun_before_the_request_is_not_reused(
    two_stores: tuple[LocalBlobStore, LocalBlobStore], group_dir: Path, syncfs_calls: list[int]
) -> None:
    first, second = two_stores
    first.sync()
    _commit(second, b"renamed after first's sync began")
    second.sync()
    assert read_sync_counts(group_dir) == SyncCounts(2, 0)


async def test_a_newer_process_sync_counts_for_an_older_one_only_once_certified(
    tmp_path: Path, group_dir: Path, syncfs_calls: list[int], patient_turns: None
) -> None:
    """A descriptor opened later never saw the errors before its opening: an older process's own sync
    must first have checked them (as when the supervisor restarts a member)."""
    older = _open_store(tmp_path)
    newer = _open_store(tmp_path)
    try:
        _commit(older, b"older's upload")
        newer.sync()  # clean, but its descriptor's errors begin at its opening
        flushes = await _flush_both_behind_a_running_sync(group_dir, older, newer)
        assert flushes == [None, None]
        # Whichever ran first, the older store never reused the newer's sync: two calls, not one.
        counts = read_sync_counts(group_dir)
        assert counts.calls == 3 - counts.skips
        older.sync()  # checks every error up to now: the newer's syncs count from here on
        calls = read_sync_counts(group_dir).calls
        assert await _flush_both_behind_a_running_sync(group_dir, older, newer) == [None, None]
        assert read_sync_counts(group_dir).calls == calls + 1
    finally:
        older.close()
        newer.close()


async def test_a_failed_sync_fails_every_upload_it_covered_in_every_process(
    two_stores: tuple[LocalBlobStore, LocalBlobStore],
    group_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    patient_turns: None,
) -> None:
    """The write-back error is reported once, to one descriptor: the record tells the other process."""
    first, second = two_stores
    first.sync()
    second.sync()
    failures = first_sync_fails(monkeypatch)
    digests = [_commit(first, b"first's lost upload"), _commit(second, b"second's lost upload")]
    errors = await _flush_both_behind_a_running_sync(group_dir, first, second)
    assert failures == []
    assert all(isinstance(error, OSError) and error.errno == errno.EIO for error in errors), errors
    assert first.sync_failure is not None
    assert second.sync_failure is not None
    assert first.needs_flush(digests[0])
    assert second.needs_flush(digests[1])
    for store in (first, second):  # a later sync would succeed: it is not trusted, in either process
        with pytest.raises(OSError, match="an earlier sync failed"):
            await store.flush()
    restarted = _open_store(group_dir.parent)  # a member the supervisor restarts: the group stays failed
    try:
        with pytest.raises(OSError, match="another process's sync failed"):
            restarted.sync()
    finally:
        restarted.close()


@contextmanager
def _stalled_holder(group_dir: Path) -> Iterator[None]:
    """The record's lock held by this test, as by a member SIGSTOPped in its turn."""
    with open(group_dir / SYNC_RECORD_FILENAME, "rb") as stalled:
        fcntl.flock(stalled.fileno(), fcntl.LOCK_EX)
        yield


def _stall_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == SHARED_SYNC_LOGGER and r.levelno == logging.WARNING)


async def test_a_turn_kept_waiting_past_the_bound_syncs_alone_and_warns_once(
    two_stores: tuple[LocalBlobStore, LocalBlobStore],
    group_dir: Path,
    syncfs_calls: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = two_stores
    first.sync()
    second.sync()
    caplog.set_level(logging.INFO, logger=SHARED_SYNC_LOGGER)
    before = read_sync_counts(group_dir)
    with _stalled_holder(group_dir):
        digest = _commit(first, b"answered while another member is stopped")
        began = time.monotonic()
        await asyncio.wait_for(first.flush(), STALLED_ANSWER_S)
        assert time.monotonic() - began >= LOCK_WAIT_S  # it did wait for its turn first
        assert not first.needs_flush(digest)
        assert _stall_warnings(caplog) == 1
        # Still stalled: the next turn goes alone at once, without a second wait or warning.
        _commit(first, b"the next one")
        await asyncio.wait_for(first.flush(), STALLED_ANSWER_S)
        assert _stall_warnings(caplog) == 1
        assert len(syncfs_calls) == before.calls + 2
    # Alone, the syncs were recorded nowhere; once the holder lets go, turns are taken again.
    assert await wait_until(lambda: "free again" in caplog.text, WAIT_S)
    assert read_sync_counts(group_dir) == before
    _commit(first, b"after the stall")
    await first.flush()
    assert read_sync_counts(group_dir).calls == before.calls + 1


async def test_a_failed_sync_without_the_lock_fails_the_group_even_after_the_holder_writes(
    two_stores: tuple[LocalBlobStore, LocalBlobStore], group_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder read the record before the failure and writes it after: the failure must survive that."""
    first, second = two_stores
    first.sync()
    second.sync()
    holding, resume = threading.Event(), threading.Event()
    real_sync = fsops.sync_filesystem
    calls: list[int] = []

    def holder_stalls_then_alone_fails(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:  # the first store's turn, under the lock
            holding.set()
            assert resume.wait(WAIT_S)
        elif len(calls) == 2:  # the second store's, alone
            raise OSError(errno.EIO, "Input/output error")
        real_sync(fd)

    monkeypatch.setattr(local_module, "sync_filesystem", holder_stalls_then_alone_fails)
    holder = asyncio.ensure_future(asyncio.to_thread(first.sync))
    assert await asyncio.to_thread(holding.wait, WAIT_S)
    digest = _commit(second, b"lost beside a stalled holder")
    with pytest.raises(OSError, match="Input/output error") as failed:
        await asyncio.wait_for(second.flush(), STALLED_ANSWER_S)
    assert failed.value.errno == errno.EIO
    assert second.needs_flush(digest)
    resume.set()
    await holder  # its own sync was clean; it writes the record's state after the failure
    restarted = _open_store(group_dir.parent)
    try:
        with pytest.raises(OSError, match="another process's sync failed"):
            restarted.sync()
    finally:
        restarted.close()
    with pytest.raises(OSError, match="another process's sync failed"):
        await first.flush()


def test_a_record_of_another_group_is_not_used(tmp_path: Path, syncfs_calls: list[int]) -> None:
    """A single server on a data directory an earlier group left: its record's clock may be a past boot's."""
    group = tmp_path / GROUP_DIRNAME
    group.mkdir()
    assert SharedSync.attach(group) is None  # no record
    create_sync_record(group)  # this process is no store's parent here
    assert SharedSync.attach(group) is None
    store = _open_store(tmp_path)
    try:
        store.sync()
    finally:
        store.close()
    assert read_sync_counts(group) == SyncCounts(0, 0)
    assert len(syncfs_calls) == 1


async def test_the_processes_of_a_real_group_take_their_syncs_in_turns(tmp_path: Path) -> None:
    """Through the real server: both processes' syncs go through the group's record.

    Which turns another's sync covers depends on timing (the tests above pin it down), so only the
    use of the record is asserted here.
    """
    data_dir = tmp_path / "data"
    with RhinoBoxProcess(data_dir, RHINOBOX_PROCESSES="2", RHINOBOX_FSYNC="always") as server:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16, force_close=True)) as session:

            async def upload(seed: int) -> int:
                async with session.post(server.url + "/ingest", data=form([make_sample("binary", seed)])) as answer:
                    return answer.status

            statuses = await asyncio.gather(*(upload(seed) for seed in range(300)))
        assert set(statuses) == {200}
        counts = read_sync_counts(data_dir / GROUP_DIRNAME)
        assert 0 < counts.calls < len(statuses), counts


async def test_a_member_stalled_holding_the_sync_lock_does_not_stall_the_others_answers(tmp_path: Path) -> None:
    """This test holds the real record's lock, as a member SIGSTOPped in its turn would: answers still come."""
    data_dir = tmp_path / "data"
    timeout = aiohttp.ClientTimeout(total=STALLED_ANSWER_S + WAIT_S)  # without the bound: a hang, then this
    with RhinoBoxProcess(data_dir, RHINOBOX_PROCESSES="2", RHINOBOX_FSYNC="always") as server:
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as session:

            async def upload(seed: int) -> tuple[int, float]:
                began = time.monotonic()
                async with session.post(server.url + "/ingest", data=form([make_sample("binary", seed)])) as answer:
                    results = (await answer.json())["results"] if answer.status == 200 else []
                    assert [r["status"] for r in results] == ["stored"], await answer.text()
                    return answer.status, time.monotonic() - began

            with _stalled_holder(data_dir / GROUP_DIRNAME):
                answers = await asyncio.gather(*(upload(seed) for seed in range(20)))
            assert {status for status, _ in answers} == {200}
            assert max(took for _, took in answers) < STALLED_ANSWER_S, answers

            def logged(level: str, words: str) -> bool:
                lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
                return any(line["level"] == level and words in line["msg"] for line in lines)

            assert logged("warning", "held the group's sync lock"), server.log_path.read_text()
            assert await wait_until(lambda: logged("info", "sync lock is free again"), WAIT_S)
            before = read_sync_counts(data_dir / GROUP_DIRNAME)
            assert [status for status, _ in await asyncio.gather(*(upload(100 + s) for s in range(5)))] == [200] * 5
            assert read_sync_counts(data_dir / GROUP_DIRNAME).calls > before.calls  # turns again
