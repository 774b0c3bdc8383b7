"""Optional API tokens: 401 without one, 403 for read-only tokens writing, /healthz always open."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from rhinobox.app import create_app
from rhinobox.http.auth import TokenSet, is_loopback, load_tokens
from rhinobox.settings import SettingsError
from tests.helpers import AiohttpClient, Client, assert_error, blob_files, form, make_settings
from tests.samples import make_sample

RW, RO = "s3cret-writer", "s3cret-reader"


@pytest.fixture
async def secured(aiohttp_client: AiohttpClient, data_dir: Path) -> Client:
    return await aiohttp_client(create_app(make_settings(data_dir, api_tokens=f"{RW}:rw,{RO}:ro")))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_unauthorized(response: aiohttp.ClientResponse) -> None:
    """401 with the fixed message: nothing says whether a token was absent, malformed or unknown."""
    assert await assert_error(response, 401, "unauthorized") == "a valid API token is required"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        bearer(RW + "x"),
        bearer(RW[:-1]),
        {"Authorization": f"Basic {RW}"},
        {"Authorization": "Bearer "},
        {"Authorization": RW},
    ],
)
async def test_missing_or_wrong_token_is_401_and_stores_nothing(
    secured: Client, data_dir: Path, headers: dict[str, str]
) -> None:
    _, payload = make_sample("png", 1)
    await assert_unauthorized(await secured.post("/ingest", data=form([("a.png", payload)]), headers=headers))
    await assert_unauthorized(await secured.get("/categories", headers=headers))
    await assert_unauthorized(await secured.get("/metrics", headers=headers))
    assert blob_files(data_dir) == {}


async def test_unknown_paths_are_401_not_404_without_a_token(secured: Client) -> None:
    await assert_unauthorized(await secured.get("/files/" + "a" * 64))
    await assert_unauthorized(await secured.get("/no/such/thing"))
    assert (await secured.get("/no/such/thing", headers=bearer(RO))).status == 404


async def test_healthz_needs_no_token(secured: Client) -> None:
    response = await secured.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_read_write_token_may_ingest(secured: Client, data_dir: Path) -> None:
    _, payload = make_sample("png", 2)
    response = await secured.post("/ingest", data=form([("a.png", payload)]), headers=bearer(RW))
    assert response.status == 200
    assert (await response.json())["results"][0]["hash"] in blob_files(data_dir)
    assert (await secured.get("/categories", headers={"Authorization": f"bearer {RW}"})).status == 200


async def test_read_only_token_may_read_but_not_write(secured: Client, data_dir: Path) -> None:
    assert (await secured.get("/categories", headers=bearer(RO))).status == 200
    assert (await secured.get("/metrics", headers=bearer(RO))).status == 200
    _, payload = make_sample("png", 3)
    response = await secured.post("/ingest", data=form([("a.png", payload)]), headers=bearer(RO))
    await assert_error(response, 403, "forbidden")
    put = await secured.put("/categories", json={"mime": {}}, headers=bearer(RO))
    await assert_error(put, 403, "forbidden")
    assert blob_files(data_dir) == {}


async def test_token_file_is_read_with_comments_and_modes(
    aiohttp_client: AiohttpClient, data_dir: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# operators\nfile-writer\n\nfile-reader:ro\n")
    client = await aiohttp_client(create_app(make_settings(data_dir, api_token_file=str(token_file))))
    _, payload = make_sample("gif", 4)
    assert (await client.post("/ingest", data=form([("a.gif", payload)]), headers=bearer("file-writer"))).status == 200
    assert (await client.post("/ingest", data=form([("a.gif", payload)]), headers=bearer("file-reader"))).status == 403
    await assert_unauthorized(await client.get("/categories", headers=bearer("# operators")))


def test_unreadable_token_file_fails_at_start(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RHINOBOX_API_TOKEN_FILE"):
        load_tokens(make_settings(data_dir, api_token_file=str(tmp_path / "missing")))


def test_token_parsing() -> None:
    tokens = TokenSet.parse(["plain", "reader:ro", "writer:rw", "with:colon"], "test")
    assert tokens.lookup("plain") is True
    assert tokens.lookup("reader") is False
    assert tokens.lookup("reader:ro") is None
    assert tokens.lookup("writer") is True
    assert tokens.lookup("with:colon") is True
    assert tokens.lookup("") is None
    assert not TokenSet.parse([], "test").enabled


def test_open_server_off_loopback_is_warned_about(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rhinobox.http.auth"):
        create_app(make_settings(data_dir, addr="0.0.0.0:0"))
    assert any("auth is OFF" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rhinobox.http.auth"):
        create_app(make_settings(data_dir, addr="127.0.0.1:0"))
        create_app(make_settings(data_dir, addr="0.0.0.0:0", api_tokens="t"))
    assert caplog.records == []
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("example.org")
