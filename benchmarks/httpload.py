"""Driving a server over real HTTP with aiohttp's client: closed-loop (N connections) or paced (a rate).

Bodies are built (or described, for streamed files) before timing starts; latency is measured from
sending a request to having read its whole answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.workload import CONTENT_TYPE, Streamed, streamed_body, streamed_body_length

__all__ = ["Body", "LoadResult", "closed_loop", "paced", "post_once"]

Body = bytes | Streamed


@dataclass(slots=True)
class LoadResult:
    """What a run of requests did: wall time, per-request latencies, and the answers' file counts."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    files: int = 0
    errors: list[str] = field(default_factory=list)


def _session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


async def post_once(session: aiohttp.ClientSession, url: str, body: Body) -> tuple[int, dict[str, Any]]:
    """POST one multipart body to `url`; returns the status and the JSON answer."""
    headers = {"Content-Type": CONTENT_TYPE}
    if isinstance(body, Streamed):
        headers["Content-Length"] = str(streamed_body_length(body))
        async with session.post(url, data=streamed_body(body), headers=headers) as response:
            return response.status, _answer(await response.read())
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, _answer(await response.read())


def _answer(raw: bytes) -> dict[str, Any]:
    """The JSON answer, or the raw text under `text` when the server answered something else."""
    try:
        answer = json.loads(raw)
    except ValueError:
        return {"text": raw[:500].decode("utf-8", errors="replace")}
    return answer if isinstance(answer, dict) else {"json": answer}


def _tally(result: LoadResult, status: int, answer: dict[str, Any]) -> None:
    if status != 200:
        result.errors.append(f"HTTP {status}: {str(answer)[:200]}")
    if "results" in answer:  # RhinoBox
        result.stored += int(answer.get("stored", 0))
        result.duplicates += int(answer.get("duplicates", 0))
        result.failed += int(answer.get("failed", 0))
        result.files += len(answer["results"])
    else:  # the floor server
        result.files += int(answer.get("files", 0))


async def closed_loop(url: str, bodies: Sequence[Body], connections: int) -> LoadResult:
    """Send every body, `connections` requests in flight at a time; returns timings and counts."""
    result = LoadResult()
    next_index = iter(range(len(bodies)))

    async def worker(session: aiohttp.ClientSession) -> None:
        for index in next_index:
            sent = time.perf_counter()
            status, answer = await post_once(session, url, bodies[index])
            result.latencies.append(time.perf_counter() - sent)
            _tally(result, status, answer)

    async with _session(connections) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(min(connections, len(bodies)))))
        result.seconds = time.perf_counter() - start
    return result


async def paced(url: str, bodies: Sequence[Body], rate: float, max_in_flight: int = 64) -> LoadResult:
    """Open loop: start request i at `i / rate` seconds (if fewer than `max_in_flight` are pending)."""
    result = LoadResult()
    slots = asyncio.Semaphore(max_in_flight)

    async def one(session: aiohttp.ClientSession, body: Body) -> None:
        try:
            sent = time.perf_counter()
            status, answer = await post_once(session, url, body)
            result.latencies.append(time.perf_counter() - sent)
            _tally(result, status, answer)
        finally:
            slots.release()

    async with _session(max_in_flight) as session:
        start = time.perf_counter()
        tasks = []
        for index, body in enumerate(bodies):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            tasks.append(asyncio.create_task(one(session, body)))
        await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - start
    return result
