"""The HTTP floor: a bare aiohttp handler on uvloop that reads multipart parts and writes them to files.

Nothing else: no hashing, no sniffing, no catalog, no sync. RhinoBox's figure divided by this one is
the share of the achievable HTTP throughput it keeps. Two parsers: aiohttp's `MultipartReader`
(`--parser aiohttp`) and python-multipart fed 256 KiB socket reads (`--parser pymp`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from pathlib import Path
from typing import Final

import uvloop
from aiohttp import BodyPartReader, web
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["main", "make_app"]

READ_CHUNK: Final = 256 * 1024
_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
OUT_DIR: Final = web.AppKey("out_dir", Path)
NAMES: Final = web.AppKey("names", itertools.count)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def with_aiohttp_reader(request: web.Request) -> web.Response:
    out_dir, names = request.app[OUT_DIR], request.app[NAMES]
    reader = await request.multipart()
    files = 0
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)
        fd = os.open(out_dir / str(next(names)), _FLAGS, 0o644)
        try:
            while chunk := await part.read_chunk(READ_CHUNK):
                _write_all(fd, chunk)
        finally:
            os.close(fd)
        files += 1
    return web.json_response({"files": files})


class _PartWriter:
    """python-multipart callbacks that write each part's bytes to its own file."""

    def __init__(self, out_dir: Path, names: itertools.count[int]) -> None:
        self.out_dir, self.names = out_dir, names
        self.fd = -1
        self.files = 0

    def on_headers_finished(self) -> None:
        self.fd = os.open(self.out_dir / str(next(self.names)), _FLAGS, 0o644)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        _write_all(self.fd, memoryview(data)[start:end])

    def on_part_end(self) -> None:
        os.close(self.fd)
        self.fd = -1
        self.files += 1


async def with_python_multipart(request: web.Request) -> web.Response:
    _, options = parse_options_header(request.headers.get("Content-Type", ""))
    writer = _PartWriter(request.app[OUT_DIR], request.app[NAMES])
    parser = MultipartParser(
        options[b"boundary"],
        callbacks={
            "on_headers_finished": writer.on_headers_finished,
            "on_part_data": writer.on_part_data,
            "on_part_end": writer.on_part_end,
        },
    )
    while chunk := await request.content.read(READ_CHUNK):
        parser.write(chunk)
    return web.json_response({"files": writer.files})


def make_app(out_dir: Path, parser: str) -> web.Application:
    app = web.Application(client_max_size=0)
    app[OUT_DIR] = out_dir
    app[NAMES] = itertools.count()
    handler = with_aiohttp_reader if parser == "aiohttp" else with_python_multipart
    app.router.add_post("/ingest", handler)
    return app


async def serve(out_dir: Path, parser: str, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(out_dir, parser), access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"floor listening on http://{bound_host}:{bound_port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="where parts are written")
    parser.add_argument("--parser", choices=("aiohttp", "pymp"), default="aiohttp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    uvloop.run(serve(args.dir, args.parser, args.host, args.port))


if __name__ == "__main__":
    main()
