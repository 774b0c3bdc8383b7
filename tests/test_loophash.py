"""The loop's BLAKE3: the same digest as hashing whole, for every size around the piece boundary."""

from __future__ import annotations

import random
import sys
import threading
import time

import blake3
import pytest

from rhinobox.ingest.loophash import GIL_KEEPING_PIECE, digest_keeping_gil


@pytest.mark.parametrize(
    "size",
    [0, 1, GIL_KEEPING_PIECE - 1, GIL_KEEPING_PIECE, GIL_KEEPING_PIECE + 1, 4096, 3 * GIL_KEEPING_PIECE, 128 * 1024],
)
def test_same_digest_as_hashing_whole(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert digest_keeping_gil(memoryview(data)) == blake3.blake3(data).hexdigest()


def _waiting_thread() -> tuple[threading.Thread, threading.Event, list[int]]:
    """A thread blocked (without the GIL) until `go` is set; then it needs the GIL to record that it ran."""
    go, ran = threading.Event(), []

    def wait_then_record() -> None:
        go.wait()
        ran.append(1)

    thread = threading.Thread(target=wait_then_record)
    thread.start()
    time.sleep(0.05)  # it is now waiting on `go`
    return thread, go, ran


def test_no_other_thread_runs_while_the_loop_hashes() -> None:
    """With forced GIL switches out of the way (a 100 s switch interval), a thread woken while we hash can
    only run if hashing lets go of the GIL: in pieces it never does; hashed whole, it does (the control)."""
    data = memoryview(random.Random(1).randbytes(4096))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        thread, go, ran = _waiting_thread()
        go.set()  # it wakes and wants the GIL, which this thread holds
        for _ in range(500):
            digest_keeping_gil(data)
        ran_while_kept = list(ran)
        thread.join()  # join lets go of the GIL: now it runs

        control, control_go, control_ran = _waiting_thread()
        control_go.set()
        for _ in range(100_000):
            blake3.blake3(data).hexdigest()  # whole: blake3 lets go of the GIL for 4 KiB
            if control_ran:
                break
        ran_while_released = list(control_ran)
        control.join()
    finally:
        sys.setswitchinterval(interval)
    assert ran_while_kept == []
    assert ran == [1]
    assert ran_while_released == [1]
