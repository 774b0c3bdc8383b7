"""Listing cost against catalog size: the same `GET /files` queries on 1,000 and 1,000,000 blobs.

The catalogs are built with direct SQL in one transaction (minutes over HTTP, seconds this way),
through the real schema and its triggers; queries then go through `SQLiteCatalog.list_blobs`, the
code the server runs. Prints the median per query and the ratio between sizes; never fails on speed.

    .venv/bin/python -m benchmarks.bench_listing [--sizes 1000,1000000] [--runs 25] [--dir /tmp/x]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from rhinobox.catalog.base import BlobQuery, category_prefixes
from rhinobox.catalog.sqlite import SQLiteCatalog, _listing_sql

__all__ = ["build_catalog", "main"]

T0: Final = 1_600_000_000.0
BATCH: Final = 50_000
# (category, mime, extension, share of blobs)
KINDS: Final = (
    ("images/png", "image/png", ".png", 0.25),
    ("images/jpeg", "image/jpeg", ".jpg", 0.25),
    ("documents/pdf", "application/pdf", ".pdf", 0.15),
    ("videos/mp4", "video/mp4", ".mp4", 0.10),
    ("code/python", "text/x-script.python", ".py", 0.10),
    ("other/octet-stream", "application/octet-stream", ".bin", 0.15),
)
RARE_NAMES: Final = 10  # blobs named "needle-*", whatever the catalog size
SLOW_QUERY_BUDGET_MS: Final = 2000  # a slow query gets at least 3 runs, then stops at this much time


def _rows(count: int, seed: int) -> Iterator[tuple[tuple[object, ...], tuple[object, ...], list[tuple[str, int]]]]:
    rng = random.Random(seed)
    weights = [k[3] for k in KINDS]
    rare = set(rng.sample(range(count), min(RARE_NAMES, count)))
    for i in range(1, count + 1):
        category, mime, extension, _ = rng.choices(KINDS, weights)[0]
        size = int(10 ** rng.uniform(3, 7))
        at = T0 + i + rng.random()
        digest = hashlib.blake2s(i.to_bytes(8, "big"), digest_size=32).hexdigest()
        hint = "trip/day1" if rng.random() < 0.05 else None
        upload_category = f"{category}/{hint}" if hint else category
        stem = "needle" if i - 1 in rare else ("holiday" if rng.random() < 0.001 else "file")
        blob = (i, digest, size, mime, category, at, at, 1)
        upload = (digest, f"{stem}-{i}{extension}", upload_category, hint, None, None, at)
        yield blob, upload, [(prefix, i) for prefix in category_prefixes(upload_category)]


def build_catalog(path: Path, count: int, seed: int = 1) -> float:
    """A catalog of `count` blobs (one upload each) at `path`; returns the build time in seconds."""
    started = time.perf_counter()
    asyncio.run(_create_schema(path))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    rows = _rows(count, seed)
    while batch := [row for _, row in zip(range(BATCH), rows, strict=False)]:
        db.executemany("INSERT INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [b for b, _, _ in batch])
        db.executemany(
            "INSERT INTO uploads (hash, name, category, hint, comment, claimed_type, uploaded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [u for _, u, _ in batch],
        )
        db.executemany("INSERT INTO blob_prefixes VALUES (?, ?)", [p for _, _, ps in batch for p in ps])
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - started


async def _create_schema(path: Path) -> None:
    catalog = SQLiteCatalog(path, durable=False)
    await catalog.open()
    await catalog.close()


def queries(count: int) -> dict[str, tuple[BlobQuery, int | None]]:
    """Name -> (filters, cursor): the shapes of listing a client asks for, scaled to the catalog."""
    newest = T0 + count
    return {
        "first page": (BlobQuery(), None),
        "page from the middle": (BlobQuery(), count // 2),
        "category=images": (BlobQuery(category="images"), None),
        "category=code/python": (BlobQuery(category="code/python"), None),
        "category=images/png/trip": (BlobQuery(category="images/png/trip"), None),
        "mime=application/pdf": (BlobQuery(mime="application/pdf"), None),
        "min_size=1MB": (BlobQuery(min_size=1_000_000), None),
        "images, 10k-100k bytes": (BlobQuery(category="images", min_size=10_000, max_size=100_000), None),
        "since (newest 10%)": (BlobQuery(since=newest - count / 10), None),
        "since (newest 20 blobs)": (BlobQuery(since=newest - 20), None),
        "until (oldest half)": (BlobQuery(until=T0 + count / 2), None),
        "name=.png (25%)": (BlobQuery(name=".PNG"), None),
        "name=holiday (0.1%)": (BlobQuery(name="holiday"), None),
        "name=needle (10 blobs)": (BlobQuery(name="needle"), None),
        "name=needle, category=images": (BlobQuery(name="needle", category="images"), None),
        "name=holiday, page mid": (BlobQuery(name="holiday"), count // 2),
        "name=ee (2 chars: scan)": (BlobQuery(name="ee"), None),
    }


async def measure(path: Path, count: int, runs: int) -> dict[str, tuple[float, int, str]]:
    """Median milliseconds, rows returned, and query plan of each listing (limit 100)."""
    catalog = SQLiteCatalog(path, durable=False)
    await catalog.open()
    results: dict[str, tuple[float, int, str]] = {}
    try:
        for name, (query, before) in queries(count).items():
            timings: list[float] = []
            rows = 0
            while len(timings) < runs and (len(timings) < 3 or sum(timings) < SLOW_QUERY_BUDGET_MS):
                started = time.perf_counter()
                page = await catalog.list_blobs(query, before=before, limit=100)
                timings.append((time.perf_counter() - started) * 1000)
                rows = len(page.blobs)
            sql, params = _listing_sql(query, None, before, 101)
            async with catalog._read().execute(f"EXPLAIN QUERY PLAN {sql}", params) as cursor:
                plan = "; ".join(str(row[-1]) for row in await cursor.fetchall())
            results[name] = (statistics.median(timings), rows, plan)
    finally:
        await catalog.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,1000000", help="catalog sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=25, help="runs per query (the median is shown)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the catalogs (default: a temp dir)")
    parser.add_argument("--plans", action="store_true", help="print each query's plan")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="rhinobox-bench-listing-"))
    workdir.mkdir(parents=True, exist_ok=True)
    figures: dict[int, dict[str, tuple[float, int, str]]] = {}
    try:
        for count in sizes:
            path = workdir / f"catalog-{count}.sqlite3"
            path.unlink(missing_ok=True)
            built = build_catalog(path, count)
            print(f"built {count:,} blobs in {built:.1f}s ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
            figures[count] = asyncio.run(measure(path, count, args.runs))
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    _print_table(sizes, figures, args.plans)


def _print_table(sizes: list[int], figures: dict[int, dict[str, tuple[float, int, str]]], plans: bool) -> None:
    header = f"{'query (limit 100)':<28}" + "".join(f"{f'{n:,} blobs':>22}" for n in sizes)
    if len(sizes) > 1:
        header += f"{'ratio':>8}"
    print(header)
    for name in figures[sizes[0]]:
        cells = [figures[n][name] for n in sizes]
        line = f"{name:<28}" + "".join(f"{f'{ms:8.3f} ms ({rows:>3} rows)':>22}" for ms, rows, _ in cells)
        if len(sizes) > 1:
            line += f"{cells[-1][0] / max(cells[0][0], 1e-6):>7.1f}x"
        print(line)
        if plans:
            print(f"    plan: {cells[-1][2]}")


if __name__ == "__main__":
    main()
