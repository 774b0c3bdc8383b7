"""`GET /categories` shows the categorization rules; `PUT /categories` replaces them whole."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from rhinobox.errors import InvalidRules
from rhinobox.http.bodies import read_json
from rhinobox.http.keys import CATEGORIZER

__all__ = ["get_categories", "put_categories"]

MAX_RULES_BODY: Final = 1024 * 1024


async def get_categories(request: web.Request) -> web.Response:
    return web.json_response(request.app[CATEGORIZER].snapshot().source)


async def put_categories(request: web.Request) -> web.Response:
    document = await read_json(request, MAX_RULES_BODY, too_large=InvalidRules, invalid=InvalidRules)
    categorizer = request.app[CATEGORIZER]
    rules = await asyncio.get_running_loop().run_in_executor(None, categorizer.replace, document)
    return web.json_response(rules.source)
