"""`FileHashLocks` between real processes: pins, deletes and commit guards of one digest exclude each other."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from rhinobox.ingest.hash_locks import FileHashLocks

DIGEST: Final = "ab" * 32
OTHER: Final = "cd" * 32
STILL_WAITING_S: Final = 0.3  # long enough for a grant that should not come to show up

# The other process: takes one kind of hold on DIGEST, says "held", keeps it until a line on stdin.
HOLDER: Final = """
import asyncio, sys
from pathlib import Path
from rhinobox.ingest.hash_locks import FileHashLocks

async def main() -> None:
    locks = FileHashLocks(Path(sys.argv[1]))
    locks.open()
    kind, digest = sys.argv[2], sys.argv[3]
    if kind == "pin":
        await locks.pin(digest)
        hold = None
    elif kind == "exclusive":
        hold = locks.exclusive(digest)
    else:
        hold = locks.committing([digest])
    if hold is not None:
        await hold.__aenter__()
    print("held", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if hold is not None:
        await hold.__aexit__(None, None, None)
    else:
        locks.unpin(digest)
    await locks.close()

asyncio.run(main())
"""


@asynccontextmanager
async def held_elsewhere(path: Path, kind: str, digest: str = DIGEST) -> AsyncIterator[subprocess.Popen[str]]:
    """Another process holding `kind` on `digest` until the block ends (or it is killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), kind, digest],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert await asyncio.to_thread(proc.stdout.readline) == "held\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.write("\n")
            proc.stdin.flush()
        await asyncio.to_thread(proc.wait, 30)


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[FileHashLocks]:
    locks = FileHashLocks(path)
    locks.open()
    try:
        yield locks
    finally:
        await locks.close()


async def waits_until_released(step: Awaitable[None], holder: subprocess.Popen[str]) -> None:
    """`step` does not finish while `holder` holds its lock, and does once the holder lets go."""
    task = asyncio.ensure_future(step)
    await asyncio.sleep(STILL_WAITING_S)
    assert not task.done(), "granted while another process held a conflicting lock"
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    await asyncio.wait_for(task, 30)


async def test_a_pin_waits_for_a_delete_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "locks"
    async with opened(path) as locks, held_elsewhere(path, "exclusive") as holder:
        await locks.pin(OTHER)  # another digest is not held up
        await waits_until_released(locks.pin(DIGEST), holder)
        assert locks.pinned(DIGEST) == 1
        locks.unpin_all([DIGEST, OTHER])


async def test_a_delete_waits_for_a_pin_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "locks"
    async with opened(path) as locks, held_elsewhere(path, "pin") as holder:
        await locks.pin(DIGEST)  # pins share
        locks.unpin(DIGEST)

        async def delete() -> None:
            async with locks.exclusive(DIGEST):
                pass

        await waits_until_released(delete(), holder)


async def test_a_commit_guard_waits_for_the_other_processs_guard(tmp_path: Path) -> None:
    path = tmp_path / "locks"
    async with opened(path) as locks, held_elsewhere(path, "committing") as holder:
        await locks.pin(DIGEST)  # a commit guard is not a delete: pins go on
        locks.unpin(DIGEST)

        async def commit() -> None:
            async with locks.committing([OTHER, DIGEST]):
                pass

        await waits_until_released(commit(), holder)


async def test_the_locks_of_a_killed_process_are_released(tmp_path: Path) -> None:
    path = tmp_path / "locks"
    async with opened(path) as locks, held_elsewhere(path, "pin") as holder:
        task = asyncio.ensure_future(_delete(locks))
        await asyncio.sleep(STILL_WAITING_S)
        assert not task.done()
        holder.kill()
        await asyncio.wait_for(task, 30)


async def _delete(locks: FileHashLocks) -> None:
    async with locks.exclusive(DIGEST):
        pass
