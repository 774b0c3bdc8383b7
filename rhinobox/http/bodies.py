"""Reading small JSON request bodies whole, with a size cap enforced while reading."""

from __future__ import annotations

import json

from aiohttp import web

from rhinobox.errors import RhinoBoxError
from rhinobox.http.ingest import body_chunks

__all__ = ["read_json"]


async def read_json(
    request: web.Request, max_bytes: int, *, too_large: type[RhinoBoxError], invalid: type[RhinoBoxError]
) -> object:
    """The body parsed as JSON; `too_large` past `max_bytes` (checked before and while reading), else `invalid`."""
    message = f"the body is limited to {max_bytes} bytes"
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(message)
    raw = bytearray()
    async for chunk in body_chunks(request):  # read(n) may return less than n: read to the end
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large(message)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"body is not JSON: {exc}") from None
    except RecursionError:
        # Nesting deeper than the parser's recursion limit (`[[[[...`, a few KB suffice).
        raise invalid("body is nested too deeply") from None
