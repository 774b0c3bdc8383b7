"""Single-file coalescing: alone or typed without libmagic, files are prepared inline; others share a worker task."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import blake3
import pytest

from rhinobox.blobs.local import LocalBlobStore
from rhinobox.http.keys import PIPELINE
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.coalesce import INLINE_PER_ITERATION, SingleFileCoalescer
from rhinobox.ingest.pool import WorkerPool
from rhinobox.ingest.sniff import MimeSniffer
from rhinobox.ingest.stages import StageContext, prepare_in_memory, type_without_libmagic
from tests.helpers import Client, entry_of, form, png
from tests.samples import SAMPLES, make_sample


class CountingSniffer(MimeSniffer):
    """Counts the files typed the full way (with libmagic where it must look), not the cheap way."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def sniff_document(self, data: bytes | memoryview) -> str:
        self.calls += 1
        return super().sniff_document(data)


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(2, 100)
    yield workers
    workers.close()


def coalescer(local_store: LocalBlobStore, pool: WorkerPool, sniffer: MimeSniffer) -> SingleFileCoalescer:
    ctx = StageContext(local_store, sniffer, Categorizer.load(local_store.spool_dir.parent))
    return SingleFileCoalescer(pool, partial(prepare_in_memory, ctx), partial(type_without_libmagic, ctx))


async def test_a_lone_request_is_prepared_inline(local_store: LocalBlobStore, pool: WorkerPool) -> None:
    singles = coalescer(local_store, pool, MimeSniffer())
    singles.enter()
    entry = entry_of(random.Random(1).randbytes(4096))
    assert singles.prepare(entry) is None
    assert entry.mime == "application/octet-stream"
    assert entry.spool_path is not None
    assert os.path.exists(entry.spool_path)
    assert (singles.inline, singles.coalesced) == (1, 0)


async def test_under_load_files_typed_without_libmagic_are_inline_and_others_share_a_worker(
    local_store: LocalBlobStore, pool: WorkerPool
) -> None:
    sniffer = CountingSniffer()
    singles = coalescer(local_store, pool, sniffer)
    for _ in range(3):
        singles.enter()
    media = entry_of(png(1), 0)
    unknown = entry_of(random.Random(2).randbytes(4096), 1)
    words = entry_of(b"plain words and nothing more\n" * 100, 2)
    assert [singles.prepare(e) for e in (media, unknown, words)] == [None] * 3
    assert (media.mime, media.blob_category) == ("image/png", "images/png")
    assert (unknown.mime, words.mime) == ("application/octet-stream", "text/plain")
    assert media.spool_path is not None
    assert Path(media.spool_path).read_bytes() == png(1)
    assert all(e.spool_path is not None and os.path.exists(e.spool_path) for e in (unknown, words))
    assert sniffer.calls == 0  # all three typed where they stood, never handed to a worker
    # A script and a JSON document need libmagic (the soft magic, the JSON parser): one worker task.
    needs_libmagic = [entry_of(b"#!/bin/sh\necho hello\n", 3), entry_of(b'{"a": [1, 2]}', 4)]
    shared = [singles.prepare(e) for e in needs_libmagic]
    assert shared[0] is not None
    assert shared[0] is shared[1]
    await shared[0]
    assert [e.mime for e in needs_libmagic] == ["text/x-shellscript", "application/json"]
    assert all(e.spool_path is not None and os.path.exists(e.spool_path) for e in needs_libmagic)
    assert sniffer.calls == 2
    assert (singles.inline, singles.coalesced) == (3, 2)


async def test_inline_preparation_is_bounded_per_loop_iteration(local_store: LocalBlobStore, pool: WorkerPool) -> None:
    singles = coalescer(local_store, pool, MimeSniffer())
    for _ in range(3):
        singles.enter()
    first = [entry_of(png(seed), seed) for seed in range(INLINE_PER_ITERATION + 4)]
    results = [singles.prepare(e) for e in first]
    assert results.count(None) == INLINE_PER_ITERATION
    waiting = {r for r in results if r is not None}
    assert len(waiting) == 1
    await asyncio.gather(*waiting)
    assert all(e.mime == "image/png" and e.spool_path is not None for e in first)
    # The next loop iteration has its budget back.
    await asyncio.sleep(0)
    later = entry_of(png(999), 999)
    assert singles.prepare(later) is None


async def test_concurrent_single_uploads_are_stored_with_their_types(client: Client) -> None:
    kinds = ["png"] * 40 + ["text"] * 40 + ["binary"] * 10
    random.Random(5).shuffle(kinds)
    samples = [(kind, make_sample(kind, i)) for i, kind in enumerate(kinds)]
    responses = await asyncio.gather(*(client.post("/ingest", data=form([s])) for _, s in samples))
    bodies = [await r.json() for r in responses]
    assert [r.status for r in responses] == [200] * len(samples)
    for (kind, (_, data)), body in zip(samples, bodies, strict=True):
        result = body["results"][0]
        assert result["hash"] == blake3.blake3(data).hexdigest()
        assert result["mime"] == SAMPLES[kind][2]
        got = await client.get(result["url"])
        assert await got.read() == data
    singles = client.app[PIPELINE].resources.singles
    assert singles.inline + singles.coalesced == len(samples)
