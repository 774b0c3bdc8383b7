"""`rhinobox verify`: the real CLI against a real data dir with planted corruption, missing blobs, orphans."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from rhinobox.app import create_app
from rhinobox.backends import make_catalog
from rhinobox.settings import Settings
from rhinobox.verify import removed_records
from tests.helpers import AiohttpClient, Client, blake3_hex, blob_files, form
from tests.samples import make_sample
from tests.server_process import RhinoBoxProcess, catalog_rows, run_cli


def run_verify(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHINOBOX_")}
    return run_cli("verify", "--data-dir", str(data_dir), *args, env=env)


async def upload(client: Client, count: int) -> dict[str, bytes]:
    files = [make_sample("jpeg", seed) for seed in range(count)]
    response = await client.post("/ingest", data=form(files))
    assert response.status == 200
    return {blake3_hex(payload): payload for _, payload in files}


def plant_problems(data_dir: Path, stored: dict[str, bytes]) -> tuple[str, str, str]:
    """Flip a byte of one blob, delete another, and drop in a blob no catalog entry knows."""
    corrupt, missing = sorted(stored)[:2]
    path = blob_files(data_dir)[corrupt]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    blob_files(data_dir)[missing].unlink()
    orphan_bytes = b"bytes that no upload recorded"
    orphan = blake3_hex(orphan_bytes)
    (data_dir / "blobs" / orphan[:2] / orphan).write_bytes(orphan_bytes)
    return corrupt, missing, orphan


async def test_clean_store_exits_0(client: Client, data_dir: Path) -> None:
    await upload(client, 5)
    result = run_verify(data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 of 5 blob(s) rehashed" in result.stdout
    assert "0 corrupt, 0 missing, 0 orphan(s)" in result.stdout
    assert "verify: [" in result.stderr  # progress, a line per step when stderr is not a terminal


async def test_problems_are_reported_with_exit_1(client: Client, data_dir: Path) -> None:
    stored = await upload(client, 6)
    corrupt, missing, orphan = plant_problems(data_dir, stored)
    result = run_verify(data_dir, "--json", "--no-progress")
    assert result.returncode == 1
    assert result.stderr == ""
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["corrupt"] == [corrupt]
    assert report["missing"] == [missing]
    assert report["orphans"] == [orphan]
    assert report["problems"] == 3
    assert report["quarantined"] == []
    text = run_verify(data_dir, "--no-progress")
    assert text.returncode == 1
    assert f"corrupt {corrupt}" in text.stdout
    assert f"missing {missing}" in text.stdout
    assert f"orphan {orphan}" in text.stdout
    # Without --repair nothing changed.
    assert set(catalog_rows(data_dir)) == set(stored)
    assert not (data_dir / "quarantine").exists()


async def test_repair_is_refused_while_a_server_holds_the_data_dir(client: Client, data_dir: Path) -> None:
    stored = await upload(client, 3)
    corrupt, _, _ = plant_problems(data_dir, stored)
    result = run_verify(data_dir, "--repair", "--no-progress")
    assert result.returncode == 2
    assert "stop the server" in result.stderr
    assert corrupt in catalog_rows(data_dir)
    assert not (data_dir / "quarantine").exists()


async def test_repair_quarantines_and_fixes_the_catalog_then_reupload_stores_a_good_copy(
    client: Client, aiohttp_client: AiohttpClient, settings: Settings, data_dir: Path
) -> None:
    stored = await upload(client, 6)
    await client.close()  # the server stops (and releases the data dir) before a repair
    corrupt, missing, orphan = plant_problems(data_dir, stored)
    result = run_verify(data_dir, "--repair", "--json", "--no-progress")
    assert result.returncode == 1  # problems were found, even though they are now fixed
    report = json.loads(result.stdout)
    assert report["uncatalogued"] == sorted([corrupt, missing])
    assert report["quarantined"] == sorted([corrupt, orphan])
    assert sorted(p.name for p in (data_dir / "quarantine").iterdir() if p.suffix != ".jsonl") == sorted(
        [corrupt, orphan]
    )
    assert Path(report["removed_log"]).parent == data_dir / "quarantine"  # the dropped rows, saved
    assert set(catalog_rows(data_dir)) == set(stored) - {corrupt, missing}
    assert corrupt not in blob_files(data_dir)
    assert orphan not in blob_files(data_dir)

    again = run_verify(data_dir, "--no-progress")
    assert again.returncode == 0, again.stdout

    # The good bytes of the corrupted blob are stored anew, not deduplicated against the bad copy.
    restarted = await aiohttp_client(create_app(settings))
    response = await restarted.post("/ingest", data=form([("again.jpg", stored[corrupt])]))
    assert (await response.json())["results"][0]["status"] == "stored"
    assert blob_files(data_dir)[corrupt].read_bytes() == stored[corrupt]
    assert run_verify(data_dir, "--no-progress").returncode == 0


async def test_sample_rehashes_only_n_blobs_but_lists_everything(client: Client, data_dir: Path) -> None:
    stored = await upload(client, 8)
    blob_files(data_dir)[sorted(stored)[0]].unlink()
    result = run_verify(data_dir, "--sample", "3", "--json", "--no-progress")
    report = json.loads(result.stdout)
    assert report["hashed"] == 3
    assert report["sampled"] is True
    assert report["missing"] == [sorted(stored)[0]]  # listing is always complete
    assert result.returncode == 1


def test_bad_sample_is_a_usage_error(tmp_path: Path) -> None:
    result = run_verify(tmp_path / "data", "--sample", "0")
    assert result.returncode == 2
    assert "--sample" in result.stderr


async def test_documented_backup_and_restore_verifies_clean(tmp_path: Path) -> None:
    """docs/deploy.md: `sqlite3 .backup` of the live catalog first, then the blobs; restore; verify."""
    data_dir, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    backup.mkdir()
    with RhinoBoxProcess(data_dir) as server:
        async with aiohttp.ClientSession(server.url) as session:
            before = [make_sample("png", seed) for seed in range(5)]
            async with session.post("/ingest", data=form(before)) as response:
                assert response.status == 200
            snapshot = subprocess.run(
                ["sqlite3", str(data_dir / "catalog.sqlite3"), f".backup '{backup / 'catalog.sqlite3'}'"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert snapshot.returncode == 0, snapshot.stderr
            after = [make_sample("gif", seed) for seed in range(2)]  # uploaded between the two steps
            async with session.post("/ingest", data=form(after)) as response:
                assert response.status == 200
            shutil.copytree(data_dir / "blobs", backup / "blobs")
    restored.mkdir()
    shutil.copy(backup / "catalog.sqlite3", restored / "catalog.sqlite3")
    shutil.copytree(backup / "blobs", restored / "blobs")

    report = json.loads(run_verify(restored, "--json", "--no-progress").stdout)
    assert report["corrupt"] == []
    assert report["missing"] == []  # every entry of the older catalog has its blob
    assert report["orphans"] == sorted(blake3_hex(p) for _, p in after)  # the harmless extras
    with RhinoBoxProcess(restored) as server:
        async with aiohttp.ClientSession(server.url) as session:
            for _, payload in before:
                async with session.get(f"/files/{blake3_hex(payload)}") as response:
                    assert response.status == 200
                    assert await response.read() == payload


def upload_names(data_dir: Path) -> dict[str, list[str]]:
    """digest -> the names of its upload records, straight from the SQLite file."""
    db = sqlite3.connect(data_dir / "catalog.sqlite3")
    try:
        names: dict[str, list[str]] = {}
        for digest, name in db.execute("SELECT hash, name FROM uploads ORDER BY id"):
            names.setdefault(digest, []).append(name)
        return names
    finally:
        db.close()


async def test_repair_refuses_to_wipe_the_catalog_when_the_blob_store_is_empty(client: Client, data_dir: Path) -> None:
    """An unmounted blob directory looks like every blob missing: that is not something to repair."""
    stored = await upload(client, 3)
    await client.close()
    names = upload_names(data_dir)
    (data_dir / "blobs").rename(data_dir / "blobs.elsewhere")
    (data_dir / "blobs").mkdir()
    refused = run_verify(data_dir, "--repair", "--json", "--no-progress")
    assert refused.returncode == 2
    assert "refusing to repair" in refused.stderr
    assert "blob store is empty" in refused.stderr
    assert "--force" in refused.stderr
    assert json.loads(refused.stdout)["missing"] == sorted(stored)  # the report still says what it found
    assert set(catalog_rows(data_dir)) == set(stored)
    assert upload_names(data_dir) == names
    assert not (data_dir / "quarantine").exists()

    forced = run_verify(data_dir, "--repair", "--force", "--json", "--no-progress")
    assert forced.returncode == 1, forced.stderr
    report = json.loads(forced.stdout)
    assert report["uncatalogued"] == sorted(stored)
    assert catalog_rows(data_dir) == {}
    log = Path(report["removed_log"])
    assert log.parent == data_dir / "quarantine"
    assert log.name.startswith("removed-")
    assert log.name.endswith(".jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(r["digest"] for r in rows if r["kind"] == "blob") == sorted(stored)
    assert {r["digest"]: [r["name"]] for r in rows if r["kind"] == "upload"} == names


async def test_repair_refuses_when_more_than_a_small_share_of_entries_are_missing(
    client: Client, data_dir: Path
) -> None:
    stored = await upload(client, 14)
    await client.close()
    gone = sorted(stored)[:11]  # more than 10 and more than 10% of the catalog
    for digest in gone:
        blob_files(data_dir)[digest].unlink()
    refused = run_verify(data_dir, "--repair", "--no-progress")
    assert refused.returncode == 2
    assert "11 of 14 catalog entries have no intact blob" in refused.stderr
    assert "missing " + gone[0] in refused.stdout
    assert set(catalog_rows(data_dir)) == set(stored)
    assert not (data_dir / "quarantine").exists()
    usage = run_verify(data_dir, "--force", "--no-progress")
    assert usage.returncode == 2
    assert "--force only applies with --repair" in usage.stderr


async def test_rows_dropped_by_a_repair_can_be_restored_from_the_saved_log(
    client: Client, settings: Settings, data_dir: Path
) -> None:
    stored = await upload(client, 6)
    await client.post("/ingest", data=form([("second-name.jpg", stored[sorted(stored)[1]])]))
    await client.close()
    names = upload_names(data_dir)
    corrupt, missing, _ = plant_problems(data_dir, stored)
    result = run_verify(data_dir, "--repair", "--no-progress")
    assert result.returncode == 1
    assert "removed catalog rows are saved in" in result.stdout
    (log,) = (data_dir / "quarantine").glob("removed-*.jsonl")
    assert set(catalog_rows(data_dir)) == set(stored) - {corrupt, missing}

    records = removed_records(log)
    assert sorted({r.digest for r in records}) == sorted([corrupt, missing])
    catalog = make_catalog(settings)
    await catalog.open()
    try:
        await catalog.record_uploads(records)
    finally:
        await catalog.close()
    assert set(catalog_rows(data_dir)) == set(stored)
    assert {d: sorted(n) for d, n in upload_names(data_dir).items()} == {d: sorted(n) for d, n in names.items()}
    assert len(names[missing]) == 2  # both uploads of the missing blob came back
