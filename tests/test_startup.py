"""Start-up: spool files from a crash are removed; orphans and missing blobs are counted in /healthz.

After an unclean stop, orphans are hashed before serving and torn ones moved to quarantine.

With auth on, the open /healthz gives only the counts; the hashes need a token.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

import rhinobox.reconcile as reconcile_module
from rhinobox import __version__, runmarker
from rhinobox.app import create_app
from rhinobox.blobs import fsops
from rhinobox.catalog.base import UploadRecord
from rhinobox.catalog.sqlite import SQLiteCatalog
from rhinobox.runmarker import ADVANCE_SECONDS, RUN_MARKER_FILENAME, RunMarker
from rhinobox.verify import QUARANTINE_DIRNAME
from tests.helpers import AiohttpClient, Client, blake3_hex, blob_files, form, make_settings, spool_files
from tests.samples import make_sample


async def reconciled(client: Client, headers: dict[str, str] | None = None) -> dict[str, Any]:
    for _ in range(200):
        body = await (await client.get("/healthz", headers=headers)).json()
        if body["reconcile"]["state"] == "done":
            return dict(body)
        await asyncio.sleep(0.02)
    raise AssertionError("reconciliation did not finish")


async def test_healthz_reports_version_and_a_clean_store(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    body = await reconciled(client)
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["reconcile"]["orphan_blobs"] == 0
    assert body["reconcile"]["missing_blobs"] == 0


async def test_restart_cleans_spool_and_reports_inconsistencies(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    files = [make_sample("png", 1), make_sample("pdf", 2)]
    assert (await first.post("/ingest", data=form(files))).status == 200
    await first.close()

    # What a crash can leave: a spool file, a blob renamed in but never recorded, a record whose blob went away.
    (data_dir / "tmp" / "deadbeef.spool").write_bytes(b"half an upload")
    orphan = b"renamed but never recorded"
    orphan_digest = blake3_hex(orphan)
    (data_dir / "blobs" / orphan_digest[:2] / orphan_digest).write_bytes(orphan)
    lost_digest = blake3_hex(files[1][1])
    blob_files(data_dir)[lost_digest].unlink()

    second = await aiohttp_client(create_app(make_settings(data_dir)))
    body = await reconciled(second)
    assert spool_files(data_dir) == []
    assert body["reconcile"]["stale_spool_files"] == 1
    assert body["reconcile"]["orphan_blobs"] == 1
    assert body["reconcile"]["orphan_sample"] == [orphan_digest]
    assert body["reconcile"]["missing_blobs"] == 1
    assert body["reconcile"]["missing_sample"] == [lost_digest]

    # Uploading the lost content again heals it: the blob is stored anew.
    again = await second.post("/ingest", data=form([files[1]]))
    assert (await again.json())["results"][0]["status"] == "stored"
    assert blob_files(data_dir)[lost_digest].read_bytes() == files[1][1]


async def test_healthz_shows_hashes_only_with_a_token_when_auth_is_on(
    aiohttp_client: AiohttpClient, data_dir: Path
) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    assert (await first.post("/ingest", data=form([make_sample("png", 1)]))).status == 200
    await first.close()
    orphan = b"renamed but never recorded"
    orphan_digest = blake3_hex(orphan)
    (data_dir / "blobs" / orphan_digest[:2] / orphan_digest).write_bytes(orphan)

    secured = await aiohttp_client(create_app(make_settings(data_dir, api_tokens="s3cret:ro")))
    anonymous = await reconciled(secured)
    assert anonymous["status"] == "ok"
    assert anonymous["reconcile"]["orphan_blobs"] == 1
    assert "orphan_sample" not in anonymous["reconcile"]
    assert "missing_sample" not in anonymous["reconcile"]
    assert "torn_sample" not in anonymous["reconcile"]
    assert orphan_digest not in str(anonymous)
    wrong = await reconciled(secured, {"Authorization": "Bearer wrong"})
    assert "orphan_sample" not in wrong["reconcile"]
    authorized = await reconciled(secured, {"Authorization": "Bearer s3cret"})
    assert authorized["reconcile"]["orphan_sample"] == [orphan_digest]
    assert authorized["reconcile"]["missing_sample"] == []


def _leave_run_marker(data_dir: Path) -> None:
    """What a run that never stopped cleanly leaves behind."""
    marker = RunMarker(data_dir)
    marker.begin()
    marker.release()


async def _stop_uncleanly(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    """A data dir as a run that never stopped leaves it (the store created by a first, clean run)."""
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    await first.close()
    _leave_run_marker(data_dir)


async def _crashed_long_ago(aiohttp_client: AiohttpClient, data_dir: Path) -> tuple[Path, float]:
    """A run that stopped uncleanly, its last completed sync ten minutes ago: (its marker, that time)."""
    await _stop_uncleanly(aiohttp_client, data_dir)
    marker = data_dir / RUN_MARKER_FILENAME
    synced = time.time() - 600
    os.utime(marker, (synced, synced))
    return marker, synced


def _plant_blob(data_dir: Path, digest: str, content: bytes) -> Path:
    """Name a blob as the server does: written elsewhere, then renamed in (replacing any lost copy)."""
    path = data_dir / "blobs" / digest[:2] / digest
    spool = data_dir / "tmp" / f"{digest}.planted"
    spool.write_bytes(content)
    os.replace(spool, path)
    return path


async def test_after_an_unclean_stop_torn_blobs_are_moved_aside_before_serving(
    aiohttp_client: AiohttpClient, data_dir: Path
) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    kept = make_sample("png", 1)
    assert (await first.post("/ingest", data=form([kept]))).status == 200
    await first.close()

    # What a power cut between a rename and its sync can leave: names whose bytes never reached the
    # disk (short, empty), beside an orphan that is whole. The marker says the run never stopped.
    _leave_run_marker(data_dir)
    short, empty, whole = (make_sample("pdf", 2)[1], make_sample("jpeg", 3)[1], b"renamed, synced, never recorded")
    short_path = _plant_blob(data_dir, blake3_hex(short), short[: len(short) // 2])
    empty_path = _plant_blob(data_dir, blake3_hex(empty), b"")
    _plant_blob(data_dir, blake3_hex(whole), whole)
    unreadable = blake3_hex(b"cannot be read")
    (data_dir / "blobs" / unreadable[:2] / unreadable).mkdir()  # reading it fails (EISDIR), as EIO would

    second = await aiohttp_client(create_app(make_settings(data_dir)))
    body = (await (await second.get("/healthz")).json())["reconcile"]  # no waiting: it ran before serving
    assert body["state"] == "done"
    assert body["unclean_stop"] is True
    assert body["torn_blobs"] == 3
    assert sorted(body["torn_sample"]) == sorted([blake3_hex(short), blake3_hex(empty), unreadable])
    assert body["orphan_blobs"] == 1
    assert body["orphan_sample"] == [blake3_hex(whole)]
    assert not short_path.exists()
    assert not empty_path.exists()
    assert (data_dir / QUARANTINE_DIRNAME / blake3_hex(short)).read_bytes() == short[: len(short) // 2]

    # The torn content is stored anew (not answered `duplicate` against the bad copy); the whole
    # orphan is re-claimed; what the catalog knew was never touched.
    response = await second.post("/ingest", data=form([("a.pdf", short), ("b.jpg", empty), ("c.bin", whole), kept]))
    statuses = [r["status"] for r in (await response.json())["results"]]
    assert statuses == ["stored", "stored", "duplicate", "duplicate"]
    for content in (short, empty, whole, kept[1]):
        assert await (await second.get(f"/files/{blake3_hex(content)}")).read() == content


async def test_a_clean_stop_removes_the_run_marker_so_the_next_start_hashes_nothing(
    aiohttp_client: AiohttpClient, data_dir: Path
) -> None:
    marker = data_dir / RUN_MARKER_FILENAME
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    assert marker.exists()
    assert (await reconciled(first))["reconcile"]["unclean_stop"] is False
    await first.close()
    assert not marker.exists()

    # After a clean stop every orphan was synced whole, so start-up only counts them (in the
    # background) and never reads them: a tampered one stays where it is.
    tampered = make_sample("pdf", 2)[1]
    path = _plant_blob(data_dir, blake3_hex(tampered), b"not the bytes of its name")
    second = await aiohttp_client(create_app(make_settings(data_dir)))
    body = (await reconciled(second))["reconcile"]
    assert body["unclean_stop"] is False
    assert body["torn_blobs"] == 0
    assert body["orphan_sample"] == [blake3_hex(tampered)]
    assert path.exists()


async def test_an_unclean_start_syncs_what_the_dead_run_left_in_the_page_cache(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After kill -9 the dead run's renamed blobs may be dirty pages only: synced before they are trusted."""
    await _stop_uncleanly(aiohttp_client, data_dir)
    content = b"renamed by the killed run, still in the page cache"
    _plant_blob(data_dir, blake3_hex(content), content)
    synced: list[int] = []

    def recorded_sync(fd: int) -> None:
        synced.append(fd)
        fsops.sync_filesystem(fd)

    monkeypatch.setattr(runmarker, "sync_filesystem", recorded_sync)

    second = await aiohttp_client(create_app(make_settings(data_dir)))
    assert len(synced) == 1, "nothing synced the orphans before serving"
    response = await second.post("/ingest", data=form([("again.bin", content)]))
    assert [r["status"] for r in (await response.json())["results"]] == ["duplicate"]


async def test_a_start_whose_check_fails_keeps_the_run_marker(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It keeps the crashed run's time too: the next start must check the same window, not a shorter one."""
    marker, crashed_run_synced = await _crashed_long_ago(aiohttp_client, data_dir)

    async def failing(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(reconcile_module, "reconcile", failing)
    with pytest.raises(OSError, match="Input/output"):
        await aiohttp_client(create_app(make_settings(data_dir)))
    assert marker.exists(), "the next start would skip the check"
    assert marker.stat().st_mtime == crashed_run_synced

    monkeypatch.undo()
    again = await aiohttp_client(create_app(make_settings(data_dir)))
    assert (await (await again.get("/healthz")).json())["reconcile"]["unclean_stop"] is True
    assert marker.stat().st_mtime > crashed_run_synced  # checked: the window closes


async def test_an_unclean_start_hashes_blobs_named_late_in_the_crashed_run_even_with_a_catalog_entry(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content catalogued before, its blob lost, stored again, power cut before the sync: torn with a row."""
    monkeypatch.setattr(runmarker, "CLOCK_SLACK_SECONDS", 0.2)
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    restored, old = make_sample("pdf", 7), make_sample("png", 8)
    assert (await first.post("/ingest", data=form([restored, old]))).status == 200
    await first.close()
    _leave_run_marker(data_dir)
    # Named (or changed) before the crashed run's last completed sync, which the marker's mtime
    # records: not hashed, so a damaged one stays (finding it is `rhinobox verify`'s job).
    old_path = blob_files(data_dir)[blake3_hex(old[1])]
    old_path.write_bytes(b"damaged long ago")
    await asyncio.sleep(0.5)
    marker = data_dir / RUN_MARKER_FILENAME
    os.utime(marker)
    restored_path = _plant_blob(
        data_dir, blake3_hex(restored[1]), restored[1][: len(restored[1]) // 2]
    )  # after that sync
    assert old_path.stat().st_ctime < marker.stat().st_mtime - 0.2 <= restored_path.stat().st_ctime

    second = await aiohttp_client(create_app(make_settings(data_dir)))
    body = (await (await second.get("/healthz")).json())["reconcile"]
    assert body["torn_sample"] == [blake3_hex(restored[1])]
    assert old_path.read_bytes() == b"damaged long ago"
    body = (await reconciled(second))["reconcile"]
    assert body["missing_sample"] == [blake3_hex(restored[1])]  # the entry is there, its blob set aside
    assert body["dropped_entries"] == 0  # first uploaded before the window: it was acknowledged
    response = await second.post("/ingest", data=form([restored]))
    assert (await response.json())["results"][0]["status"] == "stored"
    assert await (await second.get(f"/files/{blake3_hex(restored[1])}")).read() == restored[1]


async def test_the_run_marker_moves_up_to_the_last_completed_sync(
    aiohttp_client: AiohttpClient, data_dir: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    marker = data_dir / RUN_MARKER_FILENAME
    started = marker.stat().st_mtime
    await asyncio.sleep(ADVANCE_SECONDS + 0.1)
    before_upload = time.time()
    assert (await client.post("/ingest", data=form([make_sample("png", 1)]))).status == 200
    assert marker.stat().st_mtime > started
    assert marker.stat().st_mtime >= before_upload - 0.01  # the sync began after the upload's rename


async def _record_unsynced(data_dir: Path, contents: list[bytes], at: float) -> None:
    """Rows a crashed run committed (the catalog shares the blobs' sync) after its last completed sync."""
    catalog = SQLiteCatalog.in_data_dir(data_dir, durable=False)
    await catalog.open()
    try:
        await catalog.record_uploads([_record(content, at) for content in contents])
    finally:
        await catalog.close()


def _record(content: bytes, at: float) -> UploadRecord:
    return UploadRecord(
        digest=blake3_hex(content),
        size=len(content),
        mime="application/pdf",
        blob_category="documents/pdf",
        category="documents/pdf",
        name="never-acknowledged.pdf",
        hint=None,
        comment=None,
        claimed_type=None,
        uploaded_at=at,
    )


async def test_an_unclean_start_drops_entries_never_acknowledged_whose_blob_did_not_land(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog shares the blobs' sync, so a power cut before it can leave rows whose blob has no bytes
    (torn) or no name (missing). Nobody was answered for them: they go, and no row is left without its
    blob. An intact blob of the same window keeps its row; an entry from before the window stays (missing).
    """
    monkeypatch.setattr(runmarker, "CLOCK_SLACK_SECONDS", 0.2)
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    older = make_sample("png", 10)
    assert (await first.post("/ingest", data=form([older]))).status == 200
    await first.close()
    blob_files(data_dir)[blake3_hex(older[1])].unlink()  # lost long ago: its entry must stay
    torn, unnamed, intact, stepped = (make_sample("pdf", n)[1] for n in (11, 12, 13, 14))
    # Renamed with a wall clock that later stepped back: its ctime falls before the window.
    _plant_blob(data_dir, blake3_hex(stepped), stepped[: len(stepped) // 2])
    await asyncio.sleep(0.5)
    last_sync = time.time()
    _leave_run_marker(data_dir)
    os.utime(data_dir / RUN_MARKER_FILENAME, (last_sync, last_sync))
    _plant_blob(data_dir, blake3_hex(torn), torn[: len(torn) // 2])
    _plant_blob(data_dir, blake3_hex(intact), intact)
    await _record_unsynced(data_dir, [torn, unnamed, intact, stepped], at=last_sync + 0.1)

    second = await aiohttp_client(create_app(make_settings(data_dir)))
    body = (await reconciled(second))["reconcile"]
    assert sorted(body["torn_sample"]) == sorted([blake3_hex(torn), blake3_hex(stepped)])
    assert body["dropped_entries"] == 3
    assert sorted(body["dropped_sample"]) == sorted(blake3_hex(c) for c in (torn, unnamed, stepped))
    assert body["missing_sample"] == [blake3_hex(older[1])]
    assert body["orphan_blobs"] == 0
    for gone in (torn, unnamed, stepped):
        assert (await second.get(f"/files/{blake3_hex(gone)}/meta")).status == 404  # no entry left
    assert await (await second.get(f"/files/{blake3_hex(intact)}")).read() == intact
    response = await second.post("/ingest", data=form([("again.pdf", torn), ("again2.pdf", stepped)]))
    assert [r["status"] for r in (await response.json())["results"]] == ["stored", "stored"]
    assert await (await second.get(f"/files/{blake3_hex(torn)}")).read() == torn


async def test_without_the_shared_sync_an_unclean_start_drops_no_entry(
    aiohttp_client: AiohttpClient, data_dir: Path
) -> None:
    """With fsync=never an answer never waited for a sync: an entry whose blob did not land was acknowledged."""
    never = make_settings(data_dir, fsync="never")
    first = await aiohttp_client(create_app(never))
    await first.close()
    _leave_run_marker(data_dir)
    torn = make_sample("pdf", 16)[1]
    _plant_blob(data_dir, blake3_hex(torn), torn[:10])
    await _record_unsynced(data_dir, [torn], at=time.time())

    second = await aiohttp_client(create_app(never))
    body = (await reconciled(second))["reconcile"]
    assert body["torn_sample"] == [blake3_hex(torn)]  # still never trusted
    assert (body["dropped_entries"], body["missing_sample"]) == (0, [blake3_hex(torn)])


async def test_a_start_that_fails_after_moving_torn_blobs_aside_keeps_the_crashed_runs_window(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check's own syncs (after the moves, the drops) must not advance the marker before it is done."""
    marker, crashed_run_synced = await _crashed_long_ago(aiohttp_client, data_dir)
    torn = make_sample("pdf", 15)[1]
    _plant_blob(data_dir, blake3_hex(torn), torn[:10])
    await _record_unsynced(data_dir, [torn], at=time.time())

    def failing(self: RunMarker) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(RunMarker, "checked", failing)
    with pytest.raises(OSError, match="Input/output"):
        await aiohttp_client(create_app(make_settings(data_dir)))
    assert (data_dir / QUARANTINE_DIRNAME / blake3_hex(torn)).exists()  # the check did its work and synced
    assert marker.stat().st_mtime == crashed_run_synced
