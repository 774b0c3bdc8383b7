"""`GET /metrics`: Prometheus text that counts ingest results, routes, errors, queue and catalog."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from rhinobox.app import create_app
from rhinobox.http.keys import PIPELINE
from rhinobox.http.metrics import EXTRA_CATEGORY_LABELS, KNOWN_CATEGORIES
from tests.helpers import AiohttpClient, Client, form, make_settings
from tests.samples import make_sample


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_ingest_results_are_counted_by_status_and_category(client: Client) -> None:
    _, png = make_sample("png", 1)
    _, pdf = make_sample("pdf", 2)
    first = await client.post("/ingest", data=form([("a.png", png), ("b.pdf", pdf), ("empty.bin", b"")]))
    assert first.status == 207
    again = await client.post("/ingest", data=form([("a-again.png", png)]))
    assert (await again.json())["results"][0]["status"] == "duplicate"

    samples = await scrape(client)
    assert value(samples, "rhinobox_ingest_files_total", status="stored", category="images") == 1
    assert value(samples, "rhinobox_ingest_files_total", status="stored", category="documents") == 1
    assert value(samples, "rhinobox_ingest_files_total", status="duplicate", category="images") == 1
    assert value(samples, "rhinobox_ingest_files_total", status="error", category="none") == 1
    assert value(samples, "rhinobox_ingest_bytes_total", status="stored", category="images") == len(png)
    assert value(samples, "rhinobox_ingest_duplicates_total") == 1
    assert value(samples, "rhinobox_ingest_dedup_saved_bytes_total") == len(png)
    assert value(samples, "rhinobox_errors_total", code="empty_file") == 1


async def test_latency_is_labelled_by_canonical_route_not_raw_path(client: Client) -> None:
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
    for suffix in ("a", "b", "c"):
        assert (await client.get(f"/no/such/{suffix}")).status == 404
    samples = await scrape(client)
    assert value(samples, "rhinobox_http_request_duration_seconds_count", method="GET", route="/healthz") == 3
    assert value(samples, "rhinobox_http_requests_total", method="GET", route="/healthz", status="200") == 3
    # Three different unknown paths share one label value: cardinality stays bounded.
    assert value(samples, "rhinobox_http_requests_total", method="GET", route="unmatched", status="404") == 3
    assert not any("/no/such" in str(labels) for _, labels in samples)
    assert value(samples, "rhinobox_errors_total", code="not_found") == 3


async def test_request_level_errors_are_counted_by_code(client: Client) -> None:
    response = await client.post("/ingest", data=b"not multipart", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    samples = await scrape(client)
    assert value(samples, "rhinobox_errors_total", code="not_multipart") == 1
    assert value(samples, "rhinobox_http_requests_total", method="POST", route="/ingest", status="415") == 1


async def test_queue_workers_and_catalog_size_are_reported(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, workers="3", queue_size="77")))
    payloads = [make_sample("jpeg", seed)[1] for seed in range(4)]
    response = await client.post("/ingest", data=form([(f"{i}.jpg", p) for i, p in enumerate(payloads)]))
    assert response.status == 200
    samples = await scrape(client)
    assert value(samples, "rhinobox_ingest_workers") == 3
    assert value(samples, "rhinobox_ingest_queue_capacity") == 77
    assert value(samples, "rhinobox_ingest_queue_depth") == 0
    assert value(samples, "rhinobox_ingest_workers_busy") == 0
    assert value(samples, "rhinobox_ingest_worker_utilization") == 0
    assert value(samples, "rhinobox_catalog_blobs") == 4
    assert value(samples, "rhinobox_catalog_bytes") == sum(len(p) for p in payloads)
    assert value(samples, "rhinobox_catalog_uploads") == 4


async def test_queue_depth_and_busy_workers_are_read_at_scrape_time(client: Client) -> None:
    pool = client.app[PIPELINE].resources.pool
    release = threading.Event()
    started = threading.Event()

    def blocking_task() -> None:
        started.set()
        release.wait(10)

    job = asyncio.ensure_future(pool.run(5, blocking_task))  # one task standing for 5 queued files
    try:
        await asyncio.to_thread(started.wait, 10)
        samples = await scrape(client)
        assert value(samples, "rhinobox_ingest_queue_depth") == 5
        assert value(samples, "rhinobox_ingest_workers_busy") == 1
        assert value(samples, "rhinobox_ingest_worker_utilization") == 1 / pool.workers
    finally:
        release.set()
        await job
    samples = await scrape(client)
    assert value(samples, "rhinobox_ingest_queue_depth") == 0
    assert value(samples, "rhinobox_ingest_workers_busy") == 0


async def test_each_app_has_its_own_registry(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    one = await aiohttp_client(create_app(make_settings(tmp_path / "one")))
    two = await aiohttp_client(create_app(make_settings(tmp_path / "two")))
    for _ in range(2):
        await one.get("/healthz")
    assert value(await scrape(one), "rhinobox_http_requests_total", method="GET", route="/healthz", status="200") == 2
    assert value(await scrape(two), "rhinobox_http_requests_total", method="GET", route="/healthz", status="200") == 0


async def test_replacing_category_rules_many_times_keeps_the_category_label_bounded(client: Client) -> None:
    """Any read-write client can rewrite the rules; the label stays within the fixed set plus a few others."""
    rules = await (await client.get("/categories")).json()
    _, png = make_sample("png", 900)
    for cycle in range(EXTRA_CATEGORY_LABELS + 12):
        rules["mime"]["image/png"] = f"cycle{cycle}/png"
        assert (await client.put("/categories", json=rules)).status == 200
        upload = await client.post("/ingest", data=form([(f"{cycle}.png", png)]))
        assert (await upload.json())["results"][0]["category"] == f"cycle{cycle}/png"

    samples = await scrape(client)
    labels = {dict(key[1])["category"] for key in samples if key[0] == "rhinobox_ingest_files_total"}
    extras = labels - KNOWN_CATEGORIES
    assert len(extras) == EXTRA_CATEGORY_LABELS, labels
    assert "other" in labels
    counted = sum(v for (name, _), v in samples.items() if name == "rhinobox_ingest_files_total")
    assert counted == EXTRA_CATEGORY_LABELS + 12  # every file still counted, the excess under `other`
    assert value(samples, "rhinobox_ingest_files_total", status="duplicate", category="other") == 12
