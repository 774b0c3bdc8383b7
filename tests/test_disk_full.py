"""A full disk: ingest answers 507 `insufficient_storage`, before writing when below RHINOBOX_MIN_FREE_MB,
per file when the filesystem really runs out (ENOSPC on a small tmpfs) - and nothing is half stored.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rhinobox.app import create_app
from tests.helpers import AiohttpClient, assert_error, blake3_hex, blob_files, form, make_settings, spool_files
from tests.samples import make_sample
from tests.server_process import catalog_rows

MiB = 1024 * 1024
TMPFS_MB = 16


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for the test: a filesystem that really fills up."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def free_mib(path: Path) -> float:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / MiB


def assert_nothing_half_stored(data_dir: Path, expected: set[str]) -> None:
    assert spool_files(data_dir) == []
    assert set(blob_files(data_dir)) == expected
    assert set(catalog_rows(data_dir)) == expected


async def test_below_min_free_answers_507_before_writing(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    huge = str(10**9)  # more MiB than any disk here has free
    client = await aiohttp_client(create_app(make_settings(data_dir, min_free_mb=huge)))
    _, payload = make_sample("png", 1)
    response = await client.post("/ingest", data=form([("a.png", payload)]))
    await assert_error(response, 507, "insufficient_storage")
    assert_nothing_half_stored(data_dir, set())


async def test_crossing_min_free_on_a_real_small_disk(aiohttp_client: AiohttpClient, small_disk: Path) -> None:
    data_dir = small_disk / "data"
    floor = int(free_mib(small_disk)) - 3  # room for 3 MiB above the floor: one 4 MiB file crosses it
    client = await aiohttp_client(create_app(make_settings(data_dir, min_free_mb=str(floor))))
    first = os.urandom(4 * MiB)
    response = await client.post("/ingest", data=form([("first.bin", first)]))
    assert response.status == 200  # admitted above the floor (the floor is checked before writing)
    assert free_mib(small_disk) < floor
    second = os.urandom(4 * MiB)
    response = await client.post("/ingest", data=form([("second.bin", second)]))
    await assert_error(response, 507, "insufficient_storage")
    assert_nothing_half_stored(data_dir, {blake3_hex(first)})


async def test_enospc_mid_write_fails_that_file_only_and_leaves_nothing(
    aiohttp_client: AiohttpClient, small_disk: Path
) -> None:
    data_dir = small_disk / "data"
    client = await aiohttp_client(create_app(make_settings(data_dir, min_free_mb="0")))
    small = [make_sample("png", seed) for seed in range(3)]
    too_big = os.urandom((TMPFS_MB + 4) * MiB)  # larger than the whole filesystem
    response = await client.post("/ingest", data=form([small[0], ("huge.bin", too_big), small[1]]))
    assert response.status == 207
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == ["stored", "error", "stored"]
    assert results[1]["error"]["code"] == "insufficient_storage"
    stored = {blake3_hex(small[0][1]), blake3_hex(small[1][1])}
    assert_nothing_half_stored(data_dir, stored)

    alone = await client.post("/ingest", data=form([("huge.bin", too_big)]))
    assert alone.status == 507
    assert (await alone.json())["results"][0]["error"]["code"] == "insufficient_storage"
    assert_nothing_half_stored(data_dir, stored)

    # The space of the failed spool files came back: ingest works again.
    after = await client.post("/ingest", data=form([small[2]]))
    assert after.status == 200
    assert_nothing_half_stored(data_dir, stored | {blake3_hex(small[2][1])})
