"""Spool writers: bytes and hash of a large upload, and write-out started block by block when syncing."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from rhinobox.app import create_app
from rhinobox.blobs import fsops
from rhinobox.errors import StorageError
from rhinobox.http.keys import PIPELINE
from rhinobox.ingest import spool
from rhinobox.ingest.documents import DOCUMENT_HEAD_BYTES
from rhinobox.ingest.sniff import SNIFF_BYTES, MimeSniffer
from rhinobox.ingest.spool import SPOOL_SUFFIX, SpoolNames, SpoolWriter, write_spool_file
from tests.conftest import AiohttpClient, make_settings

MIB = 1024 * 1024


def test_writeback_covers_every_block_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges: list[tuple[int, int]] = []

    def recording(fd: int, offset: int, length: int) -> None:
        ranges.append((offset, length))
        fsops.start_writeback(fd, offset, length)  # the real call: it must accept these arguments

    monkeypatch.setattr(spool, "start_writeback", recording)
    blocks = [random.Random(i).randbytes(size) for i, size in enumerate((MIB, 3 * MIB + 7, 1, 2 * MIB))]
    writer = SpoolWriter(SpoolNames(tmp_path), writeback=True)
    for block in blocks[:2]:
        writer.write(block)
    writer.write_pieces(blocks[2:])
    digest = writer.finish()
    whole = b"".join(blocks)
    assert digest == blake3.blake3(whole).hexdigest()
    assert Path(writer.path).read_bytes() == whole
    assert ranges == [(0, MIB), (MIB, 3 * MIB + 7), (4 * MIB + 7, 2 * MIB + 1)]


def test_no_writeback_without_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(spool, "start_writeback", lambda fd, offset, length: calls.append(length))
    writer = SpoolWriter(SpoolNames(tmp_path))
    writer.write(b"x" * MIB)
    writer.finish()
    assert calls == []


@pytest.mark.parametrize(("fsync", "expected"), [("always", True), ("never", False)])
async def test_the_pipeline_asks_for_writeback_only_when_it_syncs(
    aiohttp_client: AiohttpClient, tmp_path: Path, fsync: str, expected: bool
) -> None:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_app(make_settings(tmp_path / "data", fsync=fsync))
    )
    writer = client.app[PIPELINE].resources.new_spool_writer()
    try:
        assert writer.writeback is expected
    finally:
        writer.abort()
    assert not Path(writer.path).exists()


def test_spool_names_are_unique_across_threads_and_instances(tmp_path: Path) -> None:
    first, second = SpoolNames(tmp_path), SpoolNames(tmp_path)

    def take(names: SpoolNames) -> list[str]:
        return [names.new_path() for _ in range(2000)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = list(pool.map(take, [first, first, second, second]))
    paths = [path for batch in batches for path in batch]
    assert len(set(paths)) == len(paths)
    assert all(Path(path).parent == tmp_path and path.endswith(SPOOL_SUFFIX) for path in paths)


def test_a_spool_name_that_exists_is_refused_not_overwritten(tmp_path: Path) -> None:
    names = SpoolNames(tmp_path)
    taken = Path(names.new_path())
    taken.write_bytes(b"someone else's")
    names._numbers = iter([0])  # type: ignore[assignment]  # the next name is `taken` again
    assert names.new_path() == str(taken)
    names._numbers = iter([0])  # type: ignore[assignment]
    with pytest.raises(StorageError):
        write_spool_file(names, b"new bytes")
    assert taken.read_bytes() == b"someone else's"


def test_the_writer_keeps_what_type_detection_needs(tmp_path: Path) -> None:
    records = [{"id": i, "name": f"record {i}"} for i in range(40000)]
    document = json.dumps(records).encode()
    writer = SpoolWriter(SpoolNames(tmp_path))
    for start in range(0, len(document), MIB):
        writer.write_pieces([document[start : start + MIB // 2], document[start + MIB // 2 : start + MIB]])
    writer.finish()
    assert writer.head == document[:SNIFF_BYTES]
    assert writer.scan.head == document[:DOCUMENT_HEAD_BYTES]
    assert writer.scan.size == len(document)
    assert MimeSniffer().sniff_scan(writer.scan) == "application/json"
    assert MimeSniffer().sniff(writer.head) == "text/plain"  # what a head alone says
    writer.abort()
