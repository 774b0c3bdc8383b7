"""`GET /categories` shows the categorization rules; `PUT /categories` replaces them whole.

Also the rules' lifetime in the app: the `RulesStore` opens before the pipeline, and when other nodes
share it a background task polls its version so a `PUT` on any node reaches every node in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from rhinobox.backends import make_rules_store
from rhinobox.errors import InvalidRules
from rhinobox.http.bodies import read_json
from rhinobox.http.keys import CATEGORIZER, SETTINGS
from rhinobox.ingest.categories import Categorizer
from rhinobox.ingest.rules_store import RULES_POLL_INTERVAL

__all__ = ["follow_rules", "get_categories", "put_categories", "rules_ctx"]

log = logging.getLogger(__name__)

MAX_RULES_BODY: Final = 1024 * 1024


async def rules_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the rules store and the categorizer on it; follow other nodes' changes while the app runs."""
    store = make_rules_store(app[SETTINGS])
    await store.open()
    try:
        app[CATEGORIZER] = await Categorizer.open(store)
        follower = None
        if store.shared:  # else only this process writes the rules: nothing to follow
            follower = asyncio.create_task(follow_rules(app[CATEGORIZER]), name="rhinobox-rules-follower")
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
    finally:
        await store.close()


async def follow_rules(categorizer: Categorizer, interval: float = RULES_POLL_INTERVAL) -> None:
    """Reload the rules whenever the store's version moves; a failed check is logged and retried."""
    refused = ""  # the fault of the stored set last refused: logged once, not every interval
    while True:
        await asyncio.sleep(interval)
        try:
            if await categorizer.refresh():
                log.info("category rules reloaded (version %d)", categorizer.version)
            refused = ""
        except InvalidRules as exc:
            if exc.message != refused:
                log.error("stored category rules are not valid; keeping the current ones: %s", exc.message)
            refused = exc.message
        except Exception as exc:  # the database may be briefly away: keep the rules in force, retry
            log.warning("could not check the category rules for changes: %s", exc)


async def get_categories(request: web.Request) -> web.Response:
    return web.json_response(request.app[CATEGORIZER].snapshot().source)


async def put_categories(request: web.Request) -> web.Response:
    """Answers once the new set is saved (so every node will follow) and in force on this node."""
    document = await read_json(request, MAX_RULES_BODY, too_large=InvalidRules, invalid=InvalidRules)
    rules = await request.app[CATEGORIZER].update(document)
    return web.json_response(rules.source)
