"""The PostgreSQL catalog on a real server: the backend-neutral contract, plus what several nodes need
(concurrent migration, grouped writes, advisory-lock arbitration between two "nodes" on one database).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from rhinobox.catalog.postgres import PostgresCatalog
from rhinobox.catalog.postgres_locks import AdvisoryHashLocks
from rhinobox.catalog.postgres_schema import MIGRATIONS
from rhinobox.errors import InsufficientStorage, StorageError
from tests.catalog_contract import *  # noqa: F403 - the contract's tests run against this backend
from tests.catalog_contract import digest, upload
from tests.helpers import free_port

SHORT_S = 0.3  # long enough for a lock that should block to show it (never a speed threshold)


@pytest.fixture
async def catalog(postgres_dsn: str) -> AsyncIterator[PostgresCatalog]:
    catalog = PostgresCatalog(postgres_dsn, durable=False)
    await catalog.open()
    try:
        yield catalog
    finally:
        await catalog.close()


@pytest.fixture
async def other_node(postgres_dsn: str, catalog: PostgresCatalog) -> AsyncIterator[PostgresCatalog]:
    """A second catalog on the same database: what another RhinoBox node would open."""
    other = PostgresCatalog(postgres_dsn, durable=False)
    await other.open()
    try:
        yield other
    finally:
        await other.close()


async def test_nodes_starting_together_migrate_once(postgres_dsn: str) -> None:
    nodes = [PostgresCatalog(postgres_dsn, durable=True) for _ in range(4)]
    await asyncio.gather(*(node.open() for node in nodes))
    try:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            applied = [row["id"] for row in await conn.fetch("SELECT id FROM schema_migrations ORDER BY id")]
        finally:
            await conn.close()
        assert applied == sorted(MIGRATIONS)
        await nodes[0].record_uploads([upload(1)])
        assert await nodes[3].known_digests([digest(1)]) == {digest(1)}
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


async def test_concurrent_writes_share_transactions(catalog: PostgresCatalog, other_node: PostgresCatalog) -> None:
    before = catalog.commits
    await asyncio.gather(
        *(catalog.record_uploads([upload(n % 40, name=f"{n}.png")]) for n in range(200)),
        *(other_node.record_uploads([upload(n % 40, name=f"o{n}.png")]) for n in range(200)),
    )
    assert catalog.commits - before < 200
    stats = await catalog.stats()
    assert (stats.blobs, stats.uploads) == (40, 400)
    blob = await other_node.get_blob(digest(7))
    assert blob is not None
    assert blob.upload_count == 10


async def test_a_failed_write_does_not_sink_its_group(catalog: PostgresCatalog) -> None:
    bad = upload(2, name="nul\x00byte.png")  # PostgreSQL text cannot hold NUL: this write fails
    results = await asyncio.gather(
        catalog.record_uploads([upload(1)]), catalog.record_uploads([bad]), return_exceptions=True
    )
    assert results[0] is None
    assert isinstance(results[1], Exception)
    assert await catalog.known_digests([digest(1), digest(2)]) == {digest(1)}


async def refuse_with(dsn: str, sqlstate: str, event: str) -> None:
    """Make the server refuse every `event` (INSERT, DELETE) on blobs with `sqlstate`, as a full disk would."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '{sqlstate}'; END $$;"
            f" CREATE TRIGGER refuse BEFORE {event} ON blobs FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    finally:
        await conn.close()


async def test_a_full_server_disk_is_insufficient_storage(catalog: PostgresCatalog, postgres_dsn: str) -> None:
    await catalog.record_uploads([upload(1)])
    await refuse_with(postgres_dsn, "53100", "INSERT OR DELETE")  # disk_full
    with pytest.raises(InsufficientStorage) as raised:
        await catalog.record_uploads([upload(2)])  # answered through the grouped writer's future
    assert isinstance(raised.value.__cause__, asyncpg.exceptions.DiskFullError)
    with pytest.raises(InsufficientStorage):
        await catalog.delete_blob(digest(1))
    assert await catalog.known_digests([digest(1), digest(2)]) == {digest(1)}


async def test_other_server_errors_are_storage_errors(catalog: PostgresCatalog, postgres_dsn: str) -> None:
    await refuse_with(postgres_dsn, "58030", "INSERT")  # io_error
    with pytest.raises(StorageError) as raised:
        await catalog.record_uploads([upload(1)])
    assert type(raised.value) is StorageError
    assert "58030" in raised.value.message
    bad = upload(2, name="nul\x00byte.png")  # text cannot hold NUL: refused by the server
    with pytest.raises(StorageError):
        await catalog.record_uploads([bad])


async def test_connection_failures_are_storage_errors(catalog: PostgresCatalog) -> None:
    unreachable = PostgresCatalog(f"postgresql://rhinobox@127.0.0.1:{free_port()}/nothing", durable=False)
    with pytest.raises(StorageError) as raised:
        await unreachable.open()
    assert isinstance(raised.value.__cause__, OSError)
    await catalog.close()
    with pytest.raises(StorageError, match="not open"):
        await catalog.get_blob(digest(1))
    with pytest.raises(StorageError, match="not open"):
        await catalog.record_uploads([upload(1)])


async def test_delete_waits_for_pins_on_another_node(catalog: PostgresCatalog, other_node: PostgresCatalog) -> None:
    await catalog.locks.pin(digest(1))
    deleting = asyncio.ensure_future(_hold_exclusive(other_node.locks, digest(1)))
    await asyncio.sleep(SHORT_S)
    assert not deleting.done()  # node A's upload pin keeps node B's delete out
    catalog.locks.unpin(digest(1))
    await asyncio.wait_for(deleting, timeout=10)


async def test_pins_wait_while_another_node_deletes(catalog: PostgresCatalog, other_node: PostgresCatalog) -> None:
    release = asyncio.Event()
    held = asyncio.Event()

    async def delete() -> None:
        async with other_node.locks.exclusive(digest(1)):
            held.set()
            await release.wait()

    deleting = asyncio.ensure_future(delete())
    await asyncio.wait_for(held.wait(), timeout=10)
    pinning = asyncio.ensure_future(catalog.locks.pin(digest(1)))
    await asyncio.sleep(SHORT_S)
    assert not pinning.done()
    await catalog.locks.pin(digest(2))  # other hashes are not held up
    release.set()
    await asyncio.wait_for(pinning, timeout=10)
    await deleting
    catalog.locks.unpin_all([digest(1), digest(2)])
    assert catalog.locks.pinned(digest(1)) == 0


async def test_pins_are_shared_within_and_across_nodes(catalog: PostgresCatalog, other_node: PostgresCatalog) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(node.locks.pin(digest(n)) for node in (catalog, other_node) for n in (1, 1, 2))), timeout=10
    )
    assert catalog.locks.pinned(digest(1)) == 2
    for node in (catalog, other_node):
        node.locks.unpin_all([digest(1), digest(1), digest(2)])
    await asyncio.wait_for(_hold_exclusive(other_node.locks, digest(1)), timeout=10)


async def test_delete_on_the_same_node_waits_for_its_pins(catalog: PostgresCatalog) -> None:
    await catalog.locks.pin(digest(1))
    deleting = asyncio.ensure_future(_hold_exclusive(catalog.locks, digest(1)))
    await asyncio.sleep(SHORT_S)
    assert not deleting.done()  # the node's own session would not conflict in PostgreSQL: checked locally
    catalog.locks.unpin(digest(1))
    await asyncio.wait_for(deleting, timeout=10)


async def test_commits_of_the_same_content_take_turns(catalog: PostgresCatalog, other_node: PostgresCatalog) -> None:
    order: list[str] = []

    async def commit(node: PostgresCatalog, label: str, digests: list[str]) -> None:
        async with node.locks.committing(digests):
            order.append(f"{label} in")
            await asyncio.sleep(0.1)
            order.append(f"{label} out")

    # Overlapping sets in different orders: sorted acquisition means no deadlock, and no overlap.
    await asyncio.wait_for(
        asyncio.gather(
            commit(catalog, "a", [digest(1), digest(2), digest(3)]),
            commit(other_node, "b", [digest(3), digest(1)]),
            commit(catalog, "c", [digest(2)]),
        ),
        timeout=20,
    )
    span = {label: (order.index(f"{label} in"), order.index(f"{label} out")) for label in "abc"}
    for other in "bc":  # a shares a digest with b and with c; b and c share none and may overlap
        assert span["a"][1] < span[other][0] or span[other][1] < span["a"][0], order


async def test_a_node_that_dies_releases_its_locks(postgres_dsn: str) -> None:
    crashed = AdvisoryHashLocks(postgres_dsn)
    survivor = AdvisoryHashLocks(postgres_dsn)
    await crashed.open()
    await survivor.open()
    try:
        await crashed.pin(digest(1))
        assert crashed._conn is not None
        crashed._conn.terminate()  # the connection drops as it would with the process
        await asyncio.wait_for(_hold_exclusive(survivor, digest(1)), timeout=10)
    finally:
        await crashed.close()
        await survivor.close()


async def test_locks_batch_concurrent_calls(catalog: PostgresCatalog) -> None:
    before = catalog.locks.queries
    digests = [digest(n) for n in range(300)]
    await asyncio.gather(*(catalog.locks.pin(d) for d in digests))
    catalog.locks.unpin_all(digests)
    assert catalog.locks.queries - before < 100


async def _hold_exclusive(locks: AdvisoryHashLocks, key: str) -> None:
    async with locks.exclusive(key):
        pass
