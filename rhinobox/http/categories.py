"""`GET /categories` shows the categorization rules; `PUT /categories` replaces them whole."""

from __future__ import annotations

import asyncio
import json
from typing import Final

from aiohttp import web

from rhinobox.errors import InvalidRules
from rhinobox.http.ingest import body_chunks
from rhinobox.http.keys import CATEGORIZER

__all__ = ["get_categories", "put_categories"]

MAX_RULES_BODY: Final = 1024 * 1024


async def get_categories(request: web.Request) -> web.Response:
    return web.json_response(request.app[CATEGORIZER].snapshot().source)


async def put_categories(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_RULES_BODY:
        raise InvalidRules(f"a rule set is at most {MAX_RULES_BODY} bytes")
    raw = bytearray()
    async for chunk in body_chunks(request):  # read(n) may return less than n: read to the end
        raw += chunk
        if len(raw) > MAX_RULES_BODY:
            raise InvalidRules(f"a rule set is at most {MAX_RULES_BODY} bytes")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRules(f"body is not JSON: {exc}") from None
    categorizer = request.app[CATEGORIZER]
    rules = await asyncio.get_running_loop().run_in_executor(None, categorizer.replace, document)
    return web.json_response(rules.source)
