"""Pipeline stages in-process, one benchmark each, so a regression in one stage is visible on its own.

    .venv/bin/pytest benchmarks/test_stages.py --benchmark-enable

Figures, never pass/fail on speed; the asserts only check that each stage did its work.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import blake3
import pytest
import uvloop
from python_multipart.multipart import MultipartParser

from benchmarks.workload import small_files
from rhinobox.backends import make_blob_store, make_catalog
from rhinobox.blobs.fsops import sync_filesystem
from rhinobox.blobs.local import LocalBlobStore
from rhinobox.catalog.base import UploadRecord
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.ingest.buffers import Arena
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.entry import STORED, FileEntry
from rhinobox.ingest.multipart import PART_END, MultipartStream
from rhinobox.ingest.pipeline import IngestPipeline
from rhinobox.ingest.sniff import SNIFF_BYTES, MimeSniffer
from rhinobox.ingest.spool import SpoolNames, SpoolWriter, write_spool_file
from rhinobox.ingest.stages import StageContext, commit_entries, prepare_in_memory
from rhinobox.settings import Settings
from tests.samples import jpeg, plain_text, png, python_source

KIB: Final = 1024
MIB: Final = 1024 * 1024
SMALL: Final = 4 * KIB
FILES: Final = 100  # small files per round
BATCH: Final = 1000  # files per round for the pool-versus-inline comparison
CHUNK: Final = 64  # files per worker task, as the server's arenas hold them (ARENA_MAX_FILES)
ROUNDS: Final = 5


def report(benchmark: Any, label: str, files: int, nbytes: int, seconds: float) -> None:
    """Print files/s and MB/s (from pytest-benchmark's mean when enabled, else the one timed call)."""
    stats = getattr(benchmark, "stats", None)
    mean = stats.stats.mean if stats is not None else seconds
    benchmark.extra_info.update(files_per_s=files / mean, mb_per_s=nbytes / MIB / mean)
    print(f"\n{label}: {files / mean:,.0f} files/s, {nbytes / MIB / mean:,.1f} MB/s ({mean * 1000:.2f} ms/round)")


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


@pytest.fixture
def rng() -> random.Random:
    return random.Random(7)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    blob_store = LocalBlobStore(tmp_path / "data", durable=False)
    blob_store.open()
    yield blob_store
    blob_store.close()


# -- spool + hash --------------------------------------------------------------------------


def test_spool_and_hash_small_files(benchmark: Any, store: LocalBlobStore, rng: random.Random) -> None:
    """What a small file costs on the way in: BLAKE3 of its bytes, then one spool file written."""
    files = [rng.randbytes(SMALL) for _ in range(FILES)]

    def clean() -> None:
        for path in store.spool_dir.iterdir():
            path.unlink()

    names = SpoolNames(store.spool_dir)

    def spool_all() -> list[str]:
        digests = []
        for data in files:
            digests.append(blake3.blake3(data).hexdigest())
            write_spool_file(names, data)
        return digests

    last: list[float] = []
    benchmark.pedantic(lambda: last.append(timed(spool_all)()), setup=clean, rounds=ROUNDS)
    assert len(list(store.spool_dir.iterdir())) == FILES
    report(benchmark, "spool+hash 4 KiB", FILES, FILES * SMALL, last[-1])


def test_spool_writer_large_file(benchmark: Any, store: LocalBlobStore, rng: random.Random) -> None:
    """A large file streamed through SpoolWriter in the server's 1 MiB blocks (hash + write)."""
    block = rng.randbytes(MIB)
    blocks = 32
    writers: list[SpoolWriter] = []

    def clean() -> None:
        while writers:
            writers.pop().abort()

    def spool() -> None:
        writer = SpoolWriter(SpoolNames(store.spool_dir))
        writers.append(writer)
        for _ in range(blocks):
            writer.write(block)
        writer.finish()

    last: list[float] = []
    benchmark.pedantic(lambda: last.append(timed(spool)()), setup=clean, rounds=ROUNDS)
    assert writers
    assert writers[-1].size == blocks * MIB
    report(benchmark, "SpoolWriter 32 MiB", 1, blocks * MIB, last[-1])
    clean()


@pytest.mark.parametrize("writeback", [False, True], ids=["no-writeback", "writeback"])
def test_spool_writer_large_file_synced(
    benchmark: Any, store: LocalBlobStore, rng: random.Random, writeback: bool
) -> None:
    """256 MiB through SpoolWriter in the server's 4 MiB blocks, then the syncfs that fsync=always makes
    (after the rename, which costs nothing here): with and without starting each block's write-out."""
    block = rng.randbytes(4 * MIB)
    blocks = 64
    names = SpoolNames(store.spool_dir)
    writers: list[SpoolWriter] = []
    dirfd = os.open(store.spool_dir, os.O_RDONLY | os.O_DIRECTORY)

    def clean() -> None:
        while writers:
            writers.pop().abort()
        sync_filesystem(dirfd)  # each round starts with nothing dirty

    def spool_and_sync() -> None:
        writer = SpoolWriter(names, writeback=writeback)
        writers.append(writer)
        for _ in range(blocks):
            writer.write(block)
        writer.finish()
        sync_filesystem(dirfd)

    last: list[float] = []
    try:
        benchmark.pedantic(lambda: last.append(timed(spool_and_sync)()), setup=clean, rounds=ROUNDS)
        assert writers[-1].size == blocks * 4 * MIB
        report(benchmark, f"SpoolWriter 256 MiB + syncfs (writeback={writeback})", 1, blocks * 4 * MIB, last[-1])
    finally:
        clean()
        os.close(dirfd)


# -- sniff -----------------------------------------------------------------------------------

SNIFF_INPUTS: Final[dict[str, Callable[[int], bytes]]] = {
    "random-binary": lambda seed: random.Random(seed).randbytes(SNIFF_BYTES),
    "media-header+random": lambda seed: small_files(random.Random(seed), 1, SNIFF_BYTES, "media")[0],
    "png": png,
    "jpeg": jpeg,
    "plain-text": lambda seed: (plain_text(seed) * 64)[:SNIFF_BYTES],
    "python-source": lambda seed: (python_source(seed) * 64)[:SNIFF_BYTES],
}


@pytest.mark.parametrize("kind", list(SNIFF_INPUTS))
def test_sniff(benchmark: Any, kind: str) -> None:
    """libmagic on the first 2 KiB: media headers are fast, text is the slow case."""
    sniffer = MimeSniffer()
    heads = [SNIFF_INPUTS[kind](seed) for seed in range(FILES)]

    def sniff_all() -> list[str]:
        return [sniffer.sniff(head) for head in heads]

    last: list[float] = []
    mimes: list[list[str]] = []
    benchmark.pedantic(lambda: last.append(timed(lambda: mimes.append(sniff_all()))()), rounds=ROUNDS)
    assert all(mimes[-1])
    assert len(mimes[-1]) == FILES
    report(benchmark, f"sniff {kind} ({mimes[-1][0]})", FILES, sum(map(len, heads)), last[-1])


# -- categorize ------------------------------------------------------------------------------


def test_categorize(benchmark: Any, tmp_path: Path) -> None:
    """Rule lookup under the read lock, for a mix of MIME types and extensions."""
    categorizer = Categorizer.load(tmp_path)
    inputs = [
        ("image/png", ".png"),
        ("application/octet-stream", ".py"),
        ("text/plain", ".md"),
        ("video/mp4", ".mp4"),
        ("application/x-unknown", ""),
    ] * (FILES // 5)

    def categorize_all() -> list[str]:
        return [categorizer.categorize(mime, ext) for mime, ext in inputs]

    last: list[float] = []
    out: list[list[str]] = []
    benchmark.pedantic(lambda: last.append(timed(lambda: out.append(categorize_all()))()), rounds=ROUNDS)
    assert out[-1][0] == "images/png"
    assert out[-1][1] == "code/python"
    report(benchmark, "categorize", FILES, 0, last[-1])


# -- commit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True], ids=["no-sync", "syncfs"])
def test_commit(benchmark: Any, store: LocalBlobStore, rng: random.Random, sync: bool) -> None:
    """`LocalBlobStore.commit` (rename-no-replace into the fan-out) of spooled files, plus one syncfs."""
    spooled: list[tuple[str, str]] = []

    def spool_fresh() -> None:
        spooled.clear()
        for _ in range(FILES):
            data = rng.randbytes(SMALL)
            spooled.append((write_spool_file(SpoolNames(store.spool_dir), data), blake3.blake3(data).hexdigest()))

    dirfd = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY)

    def commit_all() -> int:
        created = sum(store.commit(path, digest) for path, digest in spooled)
        if sync:
            sync_filesystem(dirfd)
        return created

    last: list[float] = []
    created: list[int] = []
    try:
        benchmark.pedantic(
            lambda: last.append(timed(lambda: created.append(commit_all()))()), setup=spool_fresh, rounds=ROUNDS
        )
    finally:
        os.close(dirfd)
    assert created[-1] == FILES
    report(benchmark, f"commit ({'with' if sync else 'no'} syncfs)", FILES, FILES * SMALL, last[-1])


# -- catalog ---------------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["sync-normal", "sync-full"])
def test_catalog_record_uploads(benchmark: Any, tmp_path: Path, rng: random.Random, durable: bool) -> None:
    """One `record_uploads` of 1,000 files: one transaction, as a batch request makes."""

    def records() -> list[UploadRecord]:
        now = time.time()
        return [
            UploadRecord(
                digest=rng.randbytes(32).hex(),
                size=SMALL,
                mime="application/octet-stream",
                blob_category="other/octet-stream",
                category="other/octet-stream",
                name=f"f{i}.bin",
                hint=None,
                comment=None,
                claimed_type="application/octet-stream",
                uploaded_at=now,
            )
            for i in range(BATCH)
        ]

    async def scenario() -> tuple[list[float], int]:
        catalog = SQLiteCatalog(tmp_path / "catalog.sqlite3", durable=durable)
        await catalog.open()
        seconds = []
        try:
            for _ in range(ROUNDS):
                batch = records()
                start = time.perf_counter()
                await catalog.record_uploads(batch)
                seconds.append(time.perf_counter() - start)
            commits = catalog.commits
        finally:
            await catalog.close()
        return seconds, commits

    # The catalog lives on an event loop: time each insert inside one loop, report the mean.
    out: list[tuple[list[float], int]] = []
    benchmark.pedantic(lambda: out.append(asyncio.run(scenario())), rounds=1)
    seconds, commits = out[-1]
    assert commits >= ROUNDS
    mean = sum(seconds) / len(seconds)
    benchmark.extra_info.update(files_per_s=BATCH / mean)
    print(f"\ncatalog record_uploads x{BATCH} (durable={durable}): {BATCH / mean:,.0f} files/s ({mean * 1000:.1f} ms)")


@pytest.mark.parametrize("durable", [False, True], ids=["sync-normal", "sync-full"])
def test_catalog_concurrent_single_records(benchmark: Any, tmp_path: Path, durable: bool) -> None:
    """2,048 `record_uploads` of one file each, 32 in flight, as concurrent single-file requests make."""
    calls, in_flight = 2048, 32

    def record(i: int) -> list[UploadRecord]:
        name = f"f{i}.bin"
        digest = blake3.blake3(name.encode()).hexdigest()
        return [UploadRecord(digest, SMALL, "image/png", "images/png", "images/png", name, None, None, None, 0.0)]

    async def one(catalog: SQLiteCatalog, i: int, waits: list[float]) -> None:
        start = time.perf_counter()
        await catalog.record_uploads(record(i))
        waits.append(time.perf_counter() - start)

    async def scenario() -> tuple[list[float], float]:
        catalog = SQLiteCatalog(tmp_path / f"concurrent-{time.monotonic_ns()}.sqlite3", durable=durable)
        await catalog.open()
        waits: list[float] = []
        try:
            start = time.perf_counter()
            for first in range(0, calls, in_flight):
                await asyncio.gather(*(one(catalog, i, waits) for i in range(first, first + in_flight)))
            return waits, time.perf_counter() - start
        finally:
            await catalog.close()

    out: list[tuple[list[float], float]] = []
    benchmark.pedantic(lambda: out.append(uvloop.run(scenario())), rounds=1)
    waits, seconds = out[-1]
    assert len(waits) == calls
    mean = sum(waits) / len(waits)
    benchmark.extra_info.update(files_per_s=calls / seconds, mean_wait_ms=mean * 1000)
    print(f"\ncatalog {calls} x 1 record, {in_flight} in flight (durable={durable}): {calls / seconds:,.0f} calls/s, "
          f"mean wait {mean * 1000:.2f} ms")  # fmt: skip


@pytest.mark.parametrize("group", [1, 10, 1000], ids=lambda g: f"rows={g}")
def test_catalog_cost_per_row_by_group(benchmark: Any, tmp_path: Path, group: int) -> None:
    """5,000 rows recorded `group` per commit: what one row costs when commits hold few or many.

    Single-file requests at a moderate rate commit alone; a batch commits 1,000 rows at once. Most
    of the difference is per commit (the name index's new segment, the WAL frames), not per row.
    """
    rows = 5000

    def records(first: int) -> list[UploadRecord]:
        names = [f"camera-{i:07d}.jpg" for i in range(first, first + group)]
        return [
            UploadRecord(blake3.blake3(n.encode()).hexdigest(), SMALL, "image/jpeg", "images/jpeg", "images/jpeg",
                         n, None, None, None, 0.0)
            for n in names
        ]  # fmt: skip

    async def scenario() -> tuple[float, float, int]:
        catalog = SQLiteCatalog(tmp_path / f"rows-{time.monotonic_ns()}.sqlite3", durable=False)
        await catalog.open()
        try:
            batches = [records(first) for first in range(0, rows, group)]
            cpu, start = time.process_time(), time.perf_counter()
            for batch in batches:
                await catalog.record_uploads(batch)
            return time.perf_counter() - start, time.process_time() - cpu, catalog.commits
        finally:
            await catalog.close()

    out: list[tuple[float, float, int]] = []
    benchmark.pedantic(lambda: out.append(uvloop.run(scenario())), rounds=1)
    seconds, cpu, commits = out[-1]
    assert commits == rows // group  # one commit per call: nothing merged them
    benchmark.extra_info.update(us_per_row=seconds / rows * 1e6, cpu_us_per_row=cpu / rows * 1e6)
    print(f"\ncatalog {rows} rows, {group} per commit: {seconds / rows * 1e6:.1f} us per row, "
          f"{cpu / rows * 1e6:.1f} us of process CPU per row")  # fmt: skip


# -- multipart framing -----------------------------------------------------------------------

BOUNDARY: Final = b"----rhinoboxbench7MA4YWxkTrZu0gW"
SOCKET_READ: Final = 256 * KIB  # what the server reads off the socket at a time


def _form_body(rng: random.Random, parts: int) -> bytes:
    return _form_body_of([rng.randbytes(SMALL) for _ in range(parts)])


def _form_body_of(files: Sequence[bytes]) -> bytes:
    pieces = [
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="files"; filename="f%d.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" % i + data + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(pieces) + b"--" + BOUNDARY + b"--\r\n"


def _pymp_frame(body: bytes) -> int:
    """python-multipart's parser with do-nothing callbacks (what the pymp HTTP floor runs)."""
    ends = 0

    def on_part_end() -> None:
        nonlocal ends
        ends += 1

    parser = MultipartParser(BOUNDARY, callbacks={"on_part_end": on_part_end})
    for start in range(0, len(body), SOCKET_READ):
        parser.write(body[start : start + SOCKET_READ])
    return ends


def _rhinobox_frame(body: bytes) -> int:
    stream = MultipartStream(BOUNDARY)
    ends = 0
    for start in range(0, len(body), SOCKET_READ):
        ends += sum(1 for kind, _ in stream.feed(body[start : start + SOCKET_READ]) if kind == PART_END)
    stream.finish()
    return ends


@pytest.mark.parametrize("parser", ["rhinobox", "python-multipart"])
def test_multipart_framing(benchmark: Any, rng: random.Random, parser: str) -> None:
    """1,000 x 4 KiB parts in 256 KiB reads: RhinoBox's framer (headers parsed, events built) against
    python-multipart's parser with empty callbacks."""
    body = _form_body(rng, BATCH)
    frame = _rhinobox_frame if parser == "rhinobox" else _pymp_frame
    ends: list[int] = []
    benchmark.pedantic(lambda: ends.append(frame(body)), rounds=ROUNDS * 4)
    assert ends[-1] == BATCH
    mean = benchmark.stats.stats.mean if getattr(benchmark, "stats", None) else float("nan")
    print(f"\nmultipart framing ({parser}): {mean / BATCH * 1e6:.2f} us per 4 KiB part")


def test_session_receive_and_complete_batch(benchmark: Any, tmp_path: Path, rng: random.Random) -> None:
    """One 1,000 x 4 KiB media request through `IngestSession` without HTTP: the loop's receive (frame,
    hash, pin, arenas) while the workers prepare, then complete (prepare wait, commit, record)."""
    settings = Settings.load(environ={}, overrides={"data_dir": str(tmp_path / "data"), "fsync": "never"})
    bodies = [_form_body_of(small_files(rng, BATCH, SMALL, "media")) for _ in range(ROUNDS + 1)]

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), SOCKET_READ):
            yield body[start : start + SOCKET_READ]

    async def scenario() -> list[tuple[float, float]]:
        store = make_blob_store(settings)
        store.open()
        catalog = make_catalog(settings)
        await catalog.open()
        pipeline = IngestPipeline(settings, store, catalog, Categorizer.load(settings.data_dir))
        await pipeline.warm_up()
        phases = []
        try:
            for body in bodies:
                session, boundary = pipeline.start_session(f"multipart/form-data; boundary={BOUNDARY.decode()}")
                start = time.perf_counter()
                await session.receive(boundary, chunks(body))
                received = time.perf_counter()
                report = await session.complete()
                phases.append((received - start, time.perf_counter() - received))
                assert all(e.ok for e in report.entries)
        finally:
            pipeline.close()
            await catalog.close()
            store.close()
        return phases[1:]  # the first request warms arenas and caches

    out: list[list[tuple[float, float]]] = []
    benchmark.pedantic(lambda: out.append(uvloop.run(scenario())), rounds=1)
    receive = [r * 1000 for r, _ in out[-1]]
    complete = [c * 1000 for _, c in out[-1]]
    print(f"\nsession, 1,000 x 4 KiB media: receive {', '.join(f'{r:.1f}' for r in receive)} ms; "
          f"complete {', '.join(f'{c:.1f}' for c in complete)} ms")  # fmt: skip


# -- the batch path: worker pool versus inline -------------------------------------------------


def _entries(rng: random.Random, count: int) -> list[FileEntry]:
    """`count` fresh 4 KiB files in arenas, hashed, as the session hands them to `prepare_in_memory`."""
    entries = []
    arena = Arena(CHUNK * SMALL)
    for index in range(count):
        if arena.free < SMALL:
            arena = Arena(CHUNK * SMALL)
        data = rng.randbytes(SMALL)
        entry = FileEntry(index=index, name=f"f{index}.bin", extension=".bin", claimed_type=None)
        entry.arena, entry.offset, entry.size = arena, arena.used, SMALL
        arena.append(data)
        entry.digest = blake3.blake3(data).hexdigest()
        entries.append(entry)
    return entries


@pytest.mark.parametrize("workers", [0, 1, 2, 4], ids=lambda w: f"workers={w}" if w else "inline")
def test_prepare_and_commit_batch(benchmark: Any, tmp_path: Path, rng: random.Random, workers: int) -> None:
    """sniff + categorize + spool + commit of 1,000 x 4 KiB: inline on one thread, or in 64-file chunks on a pool."""
    data_dir = tmp_path / "data"
    store = LocalBlobStore(data_dir, durable=False)
    store.open()
    ctx = StageContext(store, MimeSniffer(), Categorizer.load(tmp_path))
    pool = ThreadPoolExecutor(max_workers=workers) if workers else None
    batches: list[list[FileEntry]] = []

    def fresh() -> None:
        batches.append(_entries(rng, BATCH))

    def chunk_work(chunk: list[FileEntry]) -> None:
        prepare_in_memory(ctx, chunk)
        commit_entries(store, chunk)

    def run() -> None:
        entries = batches[-1]
        chunks = [entries[i : i + CHUNK] for i in range(0, len(entries), CHUNK)]
        if pool is None:
            for chunk in chunks:
                chunk_work(chunk)
        else:
            list(pool.map(chunk_work, chunks))

    last: list[float] = []
    try:
        benchmark.pedantic(lambda: last.append(timed(run)()), setup=fresh, rounds=ROUNDS)
    finally:
        if pool is not None:
            pool.shutdown()
        store.close()
    assert all(e.status == STORED for e in batches[-1])
    label = f"{workers} worker threads" if workers else "inline"
    report(benchmark, f"prepare+commit 1,000 x 4 KiB, {label}", BATCH, BATCH * SMALL, last[-1])
    shutil.rmtree(data_dir, ignore_errors=True)


# -- small-file creation: one thread or two ---------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"threads={t}")
def test_small_file_creation_threads(benchmark: Any, tmp_path: Path, rng: random.Random, threads: int) -> None:
    """Spool writes + local commits of 1,000 x 4 KiB from one thread or two (why a request's spool
    writes and renames take one worker at a time: `ingest/stages.py:prepare_in_memory`)."""
    store = LocalBlobStore(tmp_path / "data", durable=False)
    store.open()
    names = SpoolNames(store.spool_dir)
    batches: list[list[tuple[bytes, str]]] = []

    def fresh() -> None:
        batch = [rng.randbytes(SMALL) for _ in range(BATCH)]
        batches.append([(data, blake3.blake3(data).hexdigest()) for data in batch])

    def create(files: Sequence[tuple[bytes, str]]) -> None:
        for data, digest in files:
            store.commit(write_spool_file(names, data), digest)

    cpu: list[float] = []

    def run() -> None:
        files = batches[-1]
        started = time.process_time()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(create, [files[i::threads] for i in range(threads)]))
        cpu.append(time.process_time() - started)

    last: list[float] = []
    try:
        benchmark.pedantic(lambda: last.append(timed(run)()), setup=fresh, rounds=ROUNDS)
    finally:
        store.close()
    report(benchmark, f"create+commit 1,000 x 4 KiB, {threads} thread(s)", BATCH, BATCH * SMALL, last[-1])
    print(f"  CPU per file: {', '.join(f'{c / BATCH * 1e6:.0f}' for c in cpu)} us (each round)")
