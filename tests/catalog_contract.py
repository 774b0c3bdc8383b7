"""The `Catalog` contract: behaviour every backend must show, written against the protocol only.

A backend's test module provides an async `catalog` fixture (an opened, empty catalog) and pulls
these tests in with `from tests.catalog_contract import *`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rhinobox.catalog.base import MAX_PAGE, BlobQuery, Catalog, UploadRecord

__all__ = [
    "test_delete_removes_blob_and_uploads",
    "test_filters_with_characters_no_name_holds_match_nothing",
    "test_get_blob_aggregates_uploads",
    "test_known_and_iter_digests",
    "test_known_mimes_and_concurrent_writes_grouped",
    "test_listing_filters",
    "test_listing_limit_is_capped",
    "test_listing_pages_newest_first",
    "test_listing_stays_correct_while_inserting",
    "test_name_filter_is_literal_and_case_insensitive",
    "test_name_filter_special_characters",
    "test_name_filter_with_other_filters",
    "test_rare_name_pages_stay_correct_while_inserting",
    "test_recorded_again_after_delete_is_newest",
    "test_stats_count_dedup_savings",
    "test_time_window_matches_first_upload_times",
    "test_uploads_page_oldest_first",
]

T0 = 1_700_000_000.0


def digest(n: int) -> str:
    return hashlib.sha256(f"blob {n}".encode()).hexdigest()


def upload(
    n: int,
    *,
    size: int = 100,
    mime: str = "image/png",
    category: str = "images/png",
    name: str | None = None,
    at: float | None = None,
    hint: str | None = None,
) -> UploadRecord:
    return UploadRecord(
        digest=digest(n),
        size=size,
        mime=mime,
        blob_category=category,
        category=f"{category}/{hint}" if hint else category,
        name=name or f"file-{n}.png",
        hint=hint,
        comment=None,
        claimed_type=None,
        uploaded_at=T0 + n if at is None else at,
    )


async def record_each(catalog: Catalog, records: list[UploadRecord]) -> None:
    """One call per record, so each new blob is inserted after the previous one (listing order)."""
    for record in records:
        await catalog.record_uploads([record])


async def all_pages(catalog: Catalog, query: BlobQuery, limit: int) -> list[str]:
    seen: list[str] = []
    before = None
    while True:
        page = await catalog.list_blobs(query, before=before, limit=limit)
        assert len(page.blobs) <= limit
        seen.extend(b.digest for b in page.blobs)
        if page.next_before is None:
            return seen
        before = page.next_before


async def test_get_blob_aggregates_uploads(catalog: Catalog) -> None:
    await catalog.record_uploads([upload(1, name="a.png", at=T0 + 5)])
    await catalog.record_uploads([upload(1, name="b.png", at=T0 + 9, hint="holiday")])
    blob = await catalog.get_blob(digest(1))
    assert blob is not None
    assert (blob.digest, blob.size, blob.mime, blob.category) == (digest(1), 100, "image/png", "images/png")
    assert (blob.first_upload_at, blob.last_upload_at, blob.upload_count) == (T0 + 5, T0 + 9, 2)
    assert await catalog.get_blob(digest(2)) is None


async def test_uploads_page_oldest_first(catalog: Catalog) -> None:
    await record_each(catalog, [upload(1, name=f"n{i}", at=T0 + i, hint="h" if i == 3 else None) for i in range(7)])
    names: list[str] = []
    after = None
    while page := await catalog.list_uploads(digest(1), after=after, limit=3):
        assert len(page) <= 3
        names.extend(u.name for u in page)
        after = page[-1].id
    assert names == [f"n{i}" for i in range(7)]
    first = (await catalog.list_uploads(digest(1), limit=10))[3]
    assert (first.category, first.hint, first.uploaded_at) == ("images/png/h", "h", T0 + 3)
    assert await catalog.list_uploads(digest(2)) == []


async def test_listing_pages_newest_first(catalog: Catalog) -> None:
    await record_each(catalog, [upload(n) for n in range(25)])
    assert await all_pages(catalog, BlobQuery(), limit=10) == [digest(n) for n in reversed(range(25))]
    page = await catalog.list_blobs(BlobQuery(), limit=25)
    assert page.next_before is None
    assert [b.name for b in page.blobs[:2]] == ["file-24.png", "file-23.png"]


async def test_listing_stays_correct_while_inserting(catalog: Catalog) -> None:
    await record_each(catalog, [upload(n) for n in range(30)])
    seen: list[str] = []
    before = None
    extra = 1000
    while True:
        page = await catalog.list_blobs(BlobQuery(), before=before, limit=7)
        seen.extend(b.digest for b in page.blobs)
        # New blobs and new uploads of listed blobs arrive between pages.
        await record_each(catalog, [upload(extra + i) for i in range(3)] + [upload(29 - len(seen) // 2)])
        extra += 3
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == [digest(n) for n in reversed(range(30))]


async def test_listing_filters(catalog: Catalog) -> None:
    await record_each(
        catalog,
        [
            upload(1, category="images/png", size=10, at=T0 + 10),
            upload(2, category="images/jpeg", mime="image/jpeg", size=20, at=T0 + 20),
            upload(3, category="imagesets/x", mime="application/x-set", size=30, at=T0 + 30),
            upload(4, category="documents/pdf", mime="application/pdf", size=40, at=T0 + 40),
            upload(5, category="images/png", size=50, at=T0 + 50, hint="holiday"),
        ],
    )

    async def matching(**filters: Any) -> list[int]:
        found = await all_pages(catalog, BlobQuery(**filters), limit=2)
        return [n for n in range(1, 6) if digest(n) in found]

    assert await matching(category="images") == [1, 2, 5]
    assert await matching(category="images/png") == [1, 5]
    assert await matching(category="images/png/holiday") == [5]
    assert await matching(category="imagesets") == [3]
    assert await matching(category="image") == []
    assert await matching(mime="application/pdf") == [4]
    assert await matching(min_size=20, max_size=40) == [2, 3, 4]
    assert await matching(min_size=41) == [5]
    assert await matching(since=T0 + 20, until=T0 + 50) == [2, 3, 4]
    assert await matching(since=T0 + 50) == [5]
    assert await matching(category="images", min_size=15, until=T0 + 50) == [2]
    assert await matching(category="images", mime="image/jpeg") == [2]


async def test_time_window_matches_first_upload_times(catalog: Catalog) -> None:
    """`since`/`until` select exactly the blobs whose (stored) first_upload_at is in the window,
    also when the clock stepped back between two uploads."""
    times = [10, 20, 15, 30, 25, 40, 40, 50]
    await record_each(catalog, [upload(n, at=T0 + t) for n, t in enumerate(times)])
    firsts = {}
    for n in range(len(times)):
        blob = await catalog.get_blob(digest(n))
        assert blob is not None
        firsts[blob.digest] = blob.first_upload_at
    for since, until in [(None, None), (T0 + 20, None), (None, T0 + 30), (T0 + 15, T0 + 40), (T0 + 40, T0 + 41)]:
        for limit in (1, 3, 100):
            found = await all_pages(catalog, BlobQuery(since=since, until=until), limit=limit)
            expected = [d for d, t in firsts.items() if (since is None or t >= since) and (until is None or t < until)]
            assert sorted(found) == sorted(expected), (since, until, limit)
            assert len(found) == len(set(found))
    assert await all_pages(catalog, BlobQuery(since=T0 + 51), limit=10) == []


async def test_name_filter_is_literal_and_case_insensitive(catalog: Catalog) -> None:
    await record_each(
        catalog,
        [
            upload(1, name="Holiday_2024.PNG"),
            upload(2, name="holiday-2024.png"),
            upload(3, name="100%.txt"),
            upload(4, name="other.png"),
        ],
    )
    await catalog.record_uploads([upload(4, name="renamed HOLIDAY copy.png")])

    async def named(name: str) -> list[int]:
        found = await all_pages(catalog, BlobQuery(name=name), limit=100)
        return [n for n in range(1, 5) if digest(n) in found]

    assert await named("holiday") == [1, 2, 4]
    assert await named("HOLIDAY_") == [1]  # `_` is a literal, not a wildcard
    assert await named("0%") == [3]
    assert await named("%") == [3]
    assert await named(".png") == [1, 2, 4]
    assert await named("nothing") == []


async def test_rare_name_pages_stay_correct_while_inserting(catalog: Catalog) -> None:
    """A name few blobs carry, paged 2 at a time while new blobs (some with the name) and new uploads
    of listed blobs arrive: each matching blob once, newest first, however many names of it match."""
    rare = {3: "needle-3.png", 11: "a NEEDLE.png", 12: "needle-12.png", 25: "old.png", 39: "xneedlex.png"}
    await record_each(catalog, [upload(n, name=rare.get(n)) for n in range(40)])
    await record_each(catalog, [upload(12, name="Needle again.png"), upload(25, name="needle copy.png")])
    seen: list[str] = []
    before = None
    extra = 100
    while True:
        page = await catalog.list_blobs(BlobQuery(name="neeDLE"), before=before, limit=2)
        seen.extend(b.digest for b in page.blobs)
        # New matching blobs (newer than the cursor) and new matching names of blobs already listed.
        await record_each(catalog, [upload(extra, name=f"needle-{extra}.png"), upload(extra + 1), upload(39)])
        await catalog.record_uploads([upload(39, name=f"needle {extra}.png")])
        extra += 2
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == [digest(n) for n in (39, 25, 12, 11, 3)]
    first = await catalog.list_blobs(BlobQuery(name="needle"), limit=3)
    assert [b.digest for b in first.blobs] == [digest(n) for n in (extra - 2, extra - 4, extra - 6)]
    for query in (BlobQuery(name="needle"), BlobQuery(name="ne"), BlobQuery()):  # a cursor past any id
        assert await catalog.list_blobs(query, before=2**70, limit=3) == await catalog.list_blobs(query, limit=3)


async def test_name_filter_with_other_filters(catalog: Catalog) -> None:
    await record_each(
        catalog,
        [
            upload(1, name="report-q1.pdf", category="documents/pdf", mime="application/pdf", size=10),
            upload(2, name="report-q2.png", category="images/png", size=20),
            upload(3, name="report-q3.pdf", category="documents/pdf", mime="application/pdf", size=30),
            upload(4, name="summary.pdf", category="documents/pdf", mime="application/pdf", size=40),
            upload(5, name="Report-q4.pdf", category="documents/pdf", mime="application/pdf", size=50, hint="fin"),
            upload(6, name="re.pdf", category="documents/pdf", mime="application/pdf", size=60),
        ],
    )
    await catalog.record_uploads([upload(2, name="report-q2.png", category="documents/scans", hint="x")])

    async def matching(**filters: Any) -> list[int]:
        found = await all_pages(catalog, BlobQuery(**filters), limit=1)
        assert len(found) == len(set(found))
        return [n for n in range(1, 7) if digest(n) in found]

    # The trigram index (3+ characters) and the short-name scan agree.
    for name, everything in (("report", [1, 2, 3, 5]), ("re", [1, 2, 3, 5, 6]), ("r", [1, 2, 3, 4, 5, 6])):
        assert await matching(name=name) == everything
        assert await matching(name=name, category="documents") == everything
        assert await matching(name=name, category="documents/pdf") == [n for n in everything if n != 2]
        assert await matching(name=name, category="images") == [2]
        assert await matching(name=name, category="documents/pdf/fin") == [5]
        assert await matching(name=name, mime="application/pdf", min_size=20) == [n for n in everything if n > 2]
        assert await matching(name=name, max_size=30, since=T0 + 2) == [2, 3]
        assert await matching(name=name, until=T0 + 3, category="documents") == [1, 2]
    assert await matching(name="report", category="videos") == []


async def test_name_filter_special_characters(catalog: Catalog) -> None:
    names = [
        '50%_off "sale".png',
        "it's mine.png",
        "naïve Café.txt",
        "a_b.txt",
        "a%b.txt",
        "axb.txt",
        "中文文件名.jpg",
        "back\\slash.txt",
    ]
    await record_each(catalog, [upload(n, name=name) for n, name in enumerate(names)])

    async def named(name: str) -> list[int]:
        found = await all_pages(catalog, BlobQuery(name=name), limit=2)
        return [n for n in range(len(names)) if digest(n) in found]

    assert await named("%_o") == [0]
    assert await named("%") == [0, 4]
    assert await named("_") == [0, 3]
    assert await named("a_b") == [3]
    assert await named("A%B") == [4]
    assert await named('"sale"') == [0]
    assert await named('"') == [0]
    assert await named('e"') == [0]
    assert await named("it's") == [1]
    assert await named("'") == [1]
    assert await named("NAïVE") == [2]  # ASCII letters fold on every backend (others may, too)
    assert await named("naïve caf") == [2]
    assert await named("Café") == [2]
    assert await named("文件") == [6]
    assert await named("文件名.JPG") == [6]
    assert await named("\\s") == [7]
    assert await named("k\\") == [7]
    assert await named("*") == []
    assert await named("a.b") == []


async def test_filters_with_characters_no_name_holds_match_nothing(catalog: Catalog) -> None:
    """A NUL (or any control character, or a lone surrogate) is never in a stored name, category or type:
    such a filter finds nothing, at every length (no error, no search cut short at the NUL)."""
    await record_each(catalog, [upload(1, name="a.png"), upload(2, name="abc.png"), upload(3, name="abcdef.png")])
    for name in ["\x00", "a\x00", "\x00a", "abc\x00", "\x00abc", "ab\x00cd", "abc\ndef", "\x7fabc", "\ud800abc"]:
        page = await catalog.list_blobs(BlobQuery(name=name))
        assert (page.blobs, page.next_before) == ([], None), repr(name)
    for query in [BlobQuery(category="images\x00"), BlobQuery(category="\x00"), BlobQuery(mime="image/png\x00")]:
        assert (await catalog.list_blobs(query)).blobs == [], query
    assert len((await catalog.list_blobs(BlobQuery(name="abc"))).blobs) == 2  # the same search without it
    assert len((await catalog.list_blobs(BlobQuery(name="a"))).blobs) == 3
    assert len((await catalog.list_blobs(BlobQuery(name="bc\u00a0"))).blobs) == 0  # printable: searched as usual


async def test_listing_limit_is_capped(catalog: Catalog) -> None:
    await catalog.record_uploads([upload(n) for n in range(MAX_PAGE + 5)])
    page = await catalog.list_blobs(BlobQuery(), limit=MAX_PAGE * 5)
    assert len(page.blobs) == MAX_PAGE
    assert page.next_before is not None
    rest = await catalog.list_blobs(BlobQuery(), before=page.next_before, limit=MAX_PAGE)
    assert len(rest.blobs) == 5
    assert rest.next_before is None


async def test_stats_count_dedup_savings(catalog: Catalog) -> None:
    empty = await catalog.stats()
    assert (empty.blobs, empty.bytes_stored, empty.uploads, empty.bytes_saved) == (0, 0, 0, 0)
    await catalog.record_uploads([upload(1, size=100), upload(1, size=100), upload(2, size=7, category="a/b")])
    await catalog.record_uploads([upload(1, size=100, hint="x")])
    stats = await catalog.stats()
    assert (stats.blobs, stats.bytes_stored, stats.uploads) == (2, 107, 4)
    assert (stats.bytes_uploaded, stats.bytes_saved) == (307, 200)
    assert {k: (v.blobs, v.bytes) for k, v in stats.by_category.items()} == {"images/png": (1, 100), "a/b": (1, 7)}
    assert await catalog.delete_blob(digest(1))
    after = await catalog.stats()
    assert (after.blobs, after.bytes_stored, after.uploads, after.bytes_saved) == (1, 7, 1, 0)
    assert set(after.by_category) == {"a/b"}


async def test_delete_removes_blob_and_uploads(catalog: Catalog) -> None:
    await record_each(catalog, [upload(1, hint="holiday"), upload(2), upload(1, name="again.png")])
    assert await catalog.delete_blob(digest(1)) is True
    assert await catalog.get_blob(digest(1)) is None
    assert await catalog.list_uploads(digest(1)) == []
    assert await catalog.known_digests([digest(1), digest(2)]) == {digest(2)}
    assert await all_pages(catalog, BlobQuery(), limit=10) == [digest(2)]
    assert await all_pages(catalog, BlobQuery(category="images/png/holiday"), limit=10) == []
    assert await all_pages(catalog, BlobQuery(name="again"), limit=10) == []
    assert await catalog.delete_blob(digest(1)) is False
    assert await catalog.delete_blob(digest(3)) is False


async def test_recorded_again_after_delete_is_newest(catalog: Catalog) -> None:
    await record_each(catalog, [upload(1), upload(2), upload(3)])
    assert await catalog.delete_blob(digest(3))
    assert await catalog.delete_blob(digest(1))
    await catalog.record_uploads([upload(1, name="back.png")])
    await catalog.record_uploads([upload(4)])
    listed = await catalog.list_blobs(BlobQuery(), limit=10)
    assert [b.digest for b in listed.blobs] == [digest(4), digest(1), digest(2)]
    ids = [b.id for b in listed.blobs]
    assert ids == sorted(ids, reverse=True)
    blob = await catalog.get_blob(digest(1))
    assert blob is not None
    assert blob.upload_count == 1
    assert [u.name for u in await catalog.list_uploads(digest(1))] == ["back.png"]


async def test_known_and_iter_digests(catalog: Catalog) -> None:
    await catalog.record_uploads([upload(n) for n in range(5)])
    assert await catalog.known_digests([digest(0), digest(9), digest(4)]) == {digest(0), digest(4)}
    pages = [page async for page in catalog.iter_digests(page_size=2)]
    assert sorted(d for page in pages for d in page) == sorted(digest(n) for n in range(5))


async def test_known_mimes_and_concurrent_writes_grouped(catalog: Catalog) -> None:
    """Concurrent record calls (grouped by the writer) all land; stored types come back by digest."""
    import asyncio

    await asyncio.gather(
        *(catalog.record_uploads([upload(n, mime="application/pdf" if n % 2 else "image/png")]) for n in range(20)),
        catalog.record_uploads([upload(3, name="again.pdf", mime="application/pdf")]),
    )
    known = await catalog.known_mimes([digest(1), digest(2), digest(99)])
    assert known == {digest(1): "application/pdf", digest(2): "image/png"}
    blob = await catalog.get_blob(digest(3))
    assert blob is not None
    assert blob.upload_count == 2
    stats = await catalog.stats()
    assert (stats.blobs, stats.uploads) == (20, 21)
