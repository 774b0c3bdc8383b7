"""The loop's BLAKE3: the same digest as hashing whole, for every size around the piece boundary."""

from __future__ import annotations

import random
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


def test_a_busy_thread_cannot_take_the_gil_while_the_loop_hashes() -> None:
    """Counts GIL hand-overs, not time: a thread that only spins in Python advances only while the
    hashing thread lets go of the GIL. 200 hashes of 4 KiB whole let it run; in pieces it barely moves."""
    counter = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    data = memoryview(random.Random(1).randbytes(4096))
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.01)  # let the spinner start

        def spins_during(hash_once: object) -> int:
            before = counter[0]
            for _ in range(200):
                hash_once()  # type: ignore[operator]
            return counter[0] - before

        released = spins_during(lambda: blake3.blake3(data).hexdigest())
        kept = spins_during(lambda: digest_keeping_gil(data))
    finally:
        stop.set()
        spinner.join()
    assert released > 10 * max(kept, 1)
