"""Running the app on uvloop: bind, serve until SIGINT/SIGTERM, then shut down in order.

Shutdown: stop listening; send `on_shutdown` (event streams end); let requests in flight finish,
still reading their bodies (at most `shutdown_timeout` seconds, then they are cancelled and remove
their spool files); only then let aiohttp close the connections, and close the app in reverse order:
the worker pool drains, the catalog's writer finishes and its connections close.

Why not just `AppRunner.cleanup`: it first marks every connection closing, and a closing aiohttp
connection drops incoming bytes, so an upload still streaming its body could never finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import time
from pathlib import Path
from typing import Any, Final

import uvloop
from aiohttp import web

from rhinobox.app import create_app
from rhinobox.http.access_log import ACCESS_LOGGER, JsonAccessLogger
from rhinobox.http.errors import Handler
from rhinobox.http.protocol_errors import serve_json_errors
from rhinobox.settings import Settings

__all__ = ["LISTENING_BANNER", "LISTEN_BACKLOG", "run_server", "serve"]

log = logging.getLogger(__name__)
# Printed (and flushed) once bound; tests and scripts started with port 0 read the port from it.
LISTENING_BANNER: Final = "rhinobox listening on http://{host}:{port}"
CANCEL_GRACE: Final = 5.0  # seconds cancelled requests get to clean up (remove their spool files)
LISTEN_BACKLOG: Final = 1024


async def run_server(
    settings: Settings, *, listen: socket.socket | None = None, instance_dir: Path | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, then stop accepting, let requests finish, and close the app.

    With `listen` (a bound, listening socket a supervisor handed over) this is a serving process of a
    group: it accepts on that socket beside the others, and the app is a group member's (rhinobox.app),
    keeping its files in the supervisor's `instance_dir` where servers share the data directory.
    """
    app = create_app(settings, group_member=listen is not None, instance_dir=instance_dir)
    in_flight = InFlightRequests()
    app.middlewares.insert(0, in_flight.middleware)  # outermost: counts the whole handler chain
    runner = GracefulRunner(
        app,
        header_timeout=settings.header_timeout,
        access_log_class=JsonAccessLogger,
        access_log=logging.getLogger(ACCESS_LOGGER),
        shutdown_timeout=settings.shutdown_timeout,
        handle_signals=False,
    )
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()  # the parts that did start close in order, not at interpreter exit
        raise
    # Everything allocated so far lives as long as the process: keep it out of the collector's scans,
    # so full collections (pauses on the event loop) stay short.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    started = time.monotonic()
    try:
        site: web.BaseSite
        if listen is None:
            site = web.TCPSite(runner, settings.host, settings.port, backlog=LISTEN_BACKLOG)
        else:
            site = web.SockSite(runner, listen)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(LISTENING_BANNER.format(host=host, port=port), flush=True)
        log.info("serving data in %s with %d workers", settings.data_dir, settings.workers)
        await stop.wait()
        started = time.monotonic()
        log.info(
            "shutting down: finishing %d in-flight request(s) (up to %.0fs)",
            in_flight.count,
            settings.shutdown_timeout,
        )
        for running_site in list(runner.sites):
            await running_site.stop()
        await runner.shutdown()  # on_shutdown now: long-lived streams end instead of holding up the drain
        cut = await in_flight.drain(settings.shutdown_timeout)
        if cut:
            log.warning("shutdown timeout: cancelled %d request(s) still running", cut)
    finally:
        await runner.cleanup()
        log.info("shutdown complete in %.1fs", time.monotonic() - started)


class GracefulRunner(web.AppRunner):
    """An AppRunner whose `on_shutdown` signal is sent once (early by `run_server`, not again by `cleanup`),
    whose connections answer protocol faults in JSON and have `header_timeout` seconds to send headers."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._shutdown_sent = False
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        return serve_json_errors(await super()._make_server(), self._header_timeout)

    async def shutdown(self) -> None:
        if not self._shutdown_sent:
            self._shutdown_sent = True
            await super().shutdown()


class InFlightRequests:
    """The requests whose handlers are running, so shutdown can wait for them (and cut them off)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    @property
    def count(self) -> int:
        return len(self._tasks)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._idle.clear()
        try:
            response = await handler(request)
            if self._draining:
                response.force_close()  # keep-alive clients (nginx) should not send the next one here
            return response
        finally:
            self._tasks.discard(task)
            if not self._tasks:
                self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every running handler; cancel the rest. Returns how many were cut."""
        self._draining = True
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), left)
            await asyncio.sleep(0)  # a request that arrived on a kept-alive connection meanwhile
        cut = list(self._tasks)
        for task in cut:
            task.cancel()
        if cut:
            await asyncio.wait(cut, timeout=CANCEL_GRACE)
        return len(cut)


def _on_signal(sig: int, stop: asyncio.Event) -> None:
    if stop.is_set():
        log.warning("received %s again: still shutting down", signal.Signals(sig).name)
        return
    log.info("received %s", signal.Signals(sig).name)
    stop.set()


def serve(settings: Settings) -> int:
    """Run the server on uvloop; returns the process exit status."""
    uvloop.run(run_server(settings))
    return 0
