"""The web page (built from `web/` by the install step): `/` answers its index, `/assets/` its hashed files.

The index is revalidated on every load (`no-cache`) so a new build shows at once; every asset's name
carries a hash of its content, so it is cached for a year and never revalidated. Both are public:
the page holds no data and asks for a token itself when the API needs one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web

from rhinobox.http.errors import error_body
from rhinobox.http.keys import SETTINGS

__all__ = ["ASSETS_PREFIX", "DEFAULT_PAGE_DIR", "PAGE_CSP", "PAGE_DIR", "get_asset", "get_index"]

DEFAULT_PAGE_DIR: Final = Path(__file__).resolve().parents[2] / "web" / "dist"
PAGE_DIR = web.AppKey("page_dir", Path)  # set only to serve another build (tests); else DEFAULT_PAGE_DIR
ASSETS_PREFIX: Final = "/assets/"
INDEX_NAME: Final = "index.html"
NOT_BUILT_STATUS: Final = 503
NOT_BUILT_CODE: Final = "page_not_built"
ASSET_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
INDEX_CACHE: Final = "no-cache"
ASSET_CACHE: Final = "public, max-age=31536000, immutable"
# No inline script or style; WASM (the hashing worker) may compile; previews use the API's URLs or blob: URLs.
PAGE_CSP: Final = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; style-src 'self'; "
    "img-src 'self' blob: data:; media-src 'self' blob:; frame-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
COMMON_HEADERS: Final = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _page_dir(request: web.Request) -> Path:
    """The app's own (tests), else RHINOBOX_WEB_DIR (an installed package: the Docker image), else web/dist."""
    if PAGE_DIR in request.app:
        return request.app[PAGE_DIR]
    configured = request.app[SETTINGS].web_dir
    return Path(configured) if configured else DEFAULT_PAGE_DIR


def _not_built(page_dir: Path) -> web.Response:
    message = (
        f"the web page is not built ({page_dir.name}/{INDEX_NAME} is missing): run scripts/bootstrap.sh, "
        "which needs Node.js and npm; the API works without it"
    )
    return web.json_response(error_body(NOT_BUILT_CODE, message), status=NOT_BUILT_STATUS)


async def get_index(request: web.Request) -> web.StreamResponse:
    page_dir = _page_dir(request)
    index = page_dir / INDEX_NAME
    if not index.is_file():
        return _not_built(page_dir)
    response = web.FileResponse(index, headers={**COMMON_HEADERS, hdrs.CACHE_CONTROL: INDEX_CACHE})
    response.content_type = "text/html"
    return response


async def get_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = _page_dir(request) / "assets" / name
    if not ASSET_NAME.fullmatch(name) or not path.is_file():
        return web.json_response(error_body("not_found", f"no page asset named {name!r}"), status=404)
    return web.FileResponse(path, headers={**COMMON_HEADERS, hdrs.CACHE_CONTROL: ASSET_CACHE})
