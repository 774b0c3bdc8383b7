"""Serving the web page: the index never cached, hashed assets cached for good, public with tokens on, and a
clear error (not a crash) when the page was not built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rhinobox.app import create_app
from rhinobox.http.web_page import ASSET_CACHE, DEFAULT_PAGE_DIR, PAGE_DIR
from tests.helpers import AiohttpClient, Client, assert_error, make_settings

INDEX = '<!doctype html><script type="module" src="/assets/main-ABC123.js"></script>'
SCRIPT = b"console.log(1)"


@pytest.fixture
def page_dir(tmp_path: Path) -> Path:
    """A stand-in build: an index and one hashed asset."""
    built = tmp_path / "dist"
    (built / "assets").mkdir(parents=True)
    (built / "index.html").write_text(INDEX)
    (built / "assets" / "main-ABC123.js").write_bytes(SCRIPT)
    return built


async def _client(aiohttp_client: AiohttpClient, data_dir: Path, page_dir: Path, **settings: str) -> Client:
    app = create_app(make_settings(data_dir, **settings))
    app[PAGE_DIR] = page_dir
    return await aiohttp_client(app)


async def test_index_is_revalidated_and_allows_no_inline_script(
    aiohttp_client: AiohttpClient, data_dir: Path, page_dir: Path
) -> None:
    client = await _client(aiohttp_client, data_dir, page_dir)
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert await response.text() == INDEX
    assert response.headers["Cache-Control"] == "no-cache"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'wasm-unsafe-eval';" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    head = await client.head("/")
    assert head.status == 200
    assert head.headers["Cache-Control"] == "no-cache"


async def test_hashed_assets_are_cached_for_a_year(
    aiohttp_client: AiohttpClient, data_dir: Path, page_dir: Path
) -> None:
    client = await _client(aiohttp_client, data_dir, page_dir)
    response = await client.get("/assets/main-ABC123.js")
    assert response.status == 200
    assert await response.read() == SCRIPT
    assert response.headers["Cache-Control"] == ASSET_CACHE == "public, max-age=31536000, immutable"
    assert "javascript" in response.content_type
    assert "Content-Security-Policy" in response.headers  # the hashing worker's policy comes from its own response


@pytest.mark.parametrize("name", ["nope.js", ".hidden", "..%2findex.html", "a%20b.js"])
async def test_unknown_or_odd_asset_names_are_404(
    aiohttp_client: AiohttpClient, data_dir: Path, page_dir: Path, name: str
) -> None:
    (page_dir / "assets" / ".hidden").write_text("secret")
    client = await _client(aiohttp_client, data_dir, page_dir)
    response = await client.get(f"/assets/{name}")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_a_missing_build_answers_a_clear_error_and_the_api_still_works(
    aiohttp_client: AiohttpClient, data_dir: Path, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, data_dir, tmp_path / "never-built")
    message = await assert_error(await client.get("/"), 503, "page_not_built")
    assert "scripts/bootstrap.sh" in message
    assert (await client.get("/assets/main-ABC123.js")).status == 404
    assert (await client.get("/stats")).status == 200


async def test_the_page_is_public_when_tokens_are_on_and_the_api_is_not(
    aiohttp_client: AiohttpClient, data_dir: Path, page_dir: Path
) -> None:
    client = await _client(aiohttp_client, data_dir, page_dir, api_tokens="secret:rw")
    assert (await client.get("/")).status == 200
    assert (await client.get("/assets/main-ABC123.js")).status == 200
    await assert_error(await client.get("/stats"), 401, "unauthorized")
    await assert_error(await client.get("/files"), 401, "unauthorized")
    await assert_error(await client.post("/"), 405, "method_not_allowed")


def test_the_install_step_built_the_page_with_hashed_asset_names() -> None:
    """scripts/bootstrap.sh builds web/ into web/dist: the index names assets that exist, each name hashed."""
    index = DEFAULT_PAGE_DIR / "index.html"
    assert index.is_file(), "web/dist/index.html is missing: run scripts/bootstrap.sh"
    html = index.read_text()
    assets = re.findall(r'(?:src|href)="/assets/([^"]+)"', html)
    assert len(assets) == 2  # the script and the style sheet
    for name in assets:
        assert re.fullmatch(r"[a-z-]+-[A-Z0-9]{8}\.(js|css)", name), name
        assert (DEFAULT_PAGE_DIR / "assets" / name).is_file()
    assert "<script>" not in html  # no inline script: the page's policy forbids it


async def test_rhinobox_web_dir_names_the_build_to_serve(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    """An installed package (the Docker image) has no web/dist beside its sources: the setting names it."""
    build = tmp_path / "built"
    build.mkdir()
    (build / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    client = await aiohttp_client(create_app(make_settings(tmp_path / "data", web_dir=str(build))))
    response = await client.get("/")
    assert response.status == 200
    assert "elsewhere" in await response.text()
