"""Running the app on uvloop: bind, serve until SIGINT/SIGTERM, then shut down in order."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Final

import uvloop
from aiohttp import web

from rhinobox.app import create_app
from rhinobox.settings import Settings

__all__ = ["LISTENING_BANNER", "serve"]

log = logging.getLogger(__name__)
# Printed (and flushed) once bound; tests and scripts started with port 0 read the port from it.
LISTENING_BANNER: Final = "rhinobox listening on http://{host}:{port}"


async def run_server(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then stop accepting, let requests finish, and close the app."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(LISTENING_BANNER.format(host=host, port=port), flush=True)
        log.info("serving data in %s with %d workers", settings.data_dir, settings.workers)
        await stop.wait()
        log.info("shutting down: finishing in-flight requests (up to %.0fs)", settings.shutdown_timeout)
    finally:
        await runner.cleanup()


def serve(settings: Settings) -> int:
    """Run the server on uvloop; returns the process exit status."""
    uvloop.run(run_server(settings))
    return 0
