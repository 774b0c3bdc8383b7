"""GET/HEAD /files/{hash}, GET /files/{hash}/meta, GET /files, DELETE /files/{hash} through real clients."""

from __future__ import annotations

import random
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from rhinobox.app import create_app
from rhinobox.blobs.local import LocalBlobStore
from rhinobox.errors import RangeNotSatisfiable
from rhinobox.http.download import CACHE_FOREVER, BlobFileResponse, content_disposition
from rhinobox.http.keys import STORE
from rhinobox.http.ranges import parse_byte_range
from rhinobox.settings import Settings
from tests.helpers import (
    AiohttpClient,
    Client,
    assert_error,
    blake3_hex,
    blob_files,
    form,
    ingest_one,
    make_settings,
    spool_files,
)
from tests.samples import make_sample
from tests.server_process import RhinoBoxProcess

PAYLOAD = random.Random(0).randbytes(10_240) + b"tail"  # libmagic: application/octet-stream
SIZE = len(PAYLOAD)


class StreamingOnlyStore(LocalBlobStore):
    """The local store with `local_path` withheld: downloads take the `read_range` path (as on S3)."""

    def local_path(self, digest: str) -> None:
        return None


async def upload(client: Client, payload: bytes, name: str = "data.bin", **fields: str) -> str:
    result = await ingest_one(client, name, payload, **fields)
    assert result["hash"] == blake3_hex(payload)
    return str(result["hash"])


@pytest.fixture(params=["sendfile", "read_range"])
async def download_client(
    request: pytest.FixtureRequest, aiohttp_client: AiohttpClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Client:
    """The app serving downloads from a local file (sendfile) or through `BlobStore.read_range`."""
    if request.param == "read_range":
        monkeypatch.setattr(
            "rhinobox.app.make_blob_store", lambda s, **_: StreamingOnlyStore(s.data_dir, durable=False), raising=False
        )
    client = await aiohttp_client(create_app(settings))
    assert isinstance(client.app[STORE], StreamingOnlyStore) == (request.param == "read_range")
    return client


def assert_blob_headers(headers: Any, digest: str, mime: str) -> None:
    assert headers["ETag"] == f'"{digest}"'
    assert headers["Cache-Control"] == CACHE_FOREVER
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"].split(";")[0] == mime


# -- whole downloads, HEAD, conditions -------------------------------------------------------


async def test_get_serves_the_bytes_with_content_headers(download_client: Client) -> None:
    _, png = make_sample("png", 3)
    digest = await upload(download_client, png, "cat.png")
    response = await download_client.get(f"/files/{digest}")
    assert response.status == 200
    assert await response.read() == png
    assert_blob_headers(response.headers, digest, "image/png")
    assert response.headers["Content-Length"] == str(len(png))
    assert "Content-Disposition" not in response.headers
    assert "Content-Security-Policy" not in response.headers


async def test_head_answers_the_same_headers_without_a_body(download_client: Client) -> None:
    digest = await upload(download_client, PAYLOAD)
    response = await download_client.head(f"/files/{digest}")
    assert response.status == 200
    assert await response.read() == b""
    assert_blob_headers(response.headers, digest, "application/octet-stream")
    assert response.headers["Content-Length"] == str(SIZE)


@pytest.mark.parametrize("tag", ['"{d}"', 'W/"{d}"', '"other", "{d}"', "*"])
async def test_if_none_match_with_the_hash_is_304(download_client: Client, tag: str) -> None:
    digest = await upload(download_client, PAYLOAD)
    response = await download_client.get(f"/files/{digest}", headers={"If-None-Match": tag.format(d=digest)})
    assert response.status == 304
    assert await response.read() == b""
    assert response.headers["ETag"] == f'"{digest}"'
    assert response.headers["Cache-Control"] == CACHE_FOREVER


async def test_if_none_match_with_another_tag_sends_the_blob(download_client: Client) -> None:
    digest = await upload(download_client, PAYLOAD)
    response = await download_client.get(f"/files/{digest}", headers={"If-None-Match": '"0-1f"'})
    assert response.status == 200
    assert await response.read() == PAYLOAD


async def test_if_match(download_client: Client) -> None:
    digest = await upload(download_client, PAYLOAD)
    ok = await download_client.get(f"/files/{digest}", headers={"If-Match": f'"{digest}"'})
    assert ok.status == 200
    assert await ok.read() == PAYLOAD
    refused = await download_client.get(f"/files/{digest}", headers={"If-Match": '"something-else"'})
    await assert_error(refused, 412, "precondition_failed")


# -- ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 10), ("bytes=100-", 100, SIZE), ("bytes=-4", SIZE - 4, SIZE), ("bytes=10-99999", 10, SIZE)],
)
async def test_single_range_is_206(download_client: Client, header: str, start: int, end: int) -> None:
    digest = await upload(download_client, PAYLOAD)
    response = await download_client.get(f"/files/{digest}", headers={"Range": header})
    assert response.status == 206
    assert await response.read() == PAYLOAD[start:end]
    assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert response.headers["Content-Length"] == str(end - start)
    assert_blob_headers(response.headers, digest, "application/octet-stream")


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 10}", "bytes=-0"])
async def test_unsatisfiable_range_is_416(download_client: Client, header: str) -> None:
    digest = await upload(download_client, PAYLOAD)
    response = await download_client.get(f"/files/{digest}", headers={"Range": header})
    await assert_error(response, 416, "range_not_satisfiable")
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "items=0-1", "bytes=abc", "bytes=-"])
async def test_range_we_do_not_serve_is_ignored(download_client: Client, header: str) -> None:
    digest = await upload(download_client, PAYLOAD)
    response = await download_client.get(f"/files/{digest}", headers={"Range": header})
    assert response.status == 200
    assert await response.read() == PAYLOAD


async def test_if_range_is_honoured(download_client: Client) -> None:
    digest = await upload(download_client, PAYLOAD)
    url = f"/files/{digest}"
    current = await download_client.get(url, headers={"Range": "bytes=5-9", "If-Range": f'"{digest}"'})
    assert current.status == 206
    assert await current.read() == PAYLOAD[5:10]
    for stale in ('"0-1f"', f'W/"{digest}"', "Wed, 21 Oct 2015 07:28:00 GMT"):
        response = await download_client.get(url, headers={"Range": "bytes=5-9", "If-Range": stale})
        assert response.status == 200, stale
        assert await response.read() == PAYLOAD


@st.composite
def range_headers(draw: st.DrawFn) -> str:
    first = draw(st.one_of(st.none(), st.integers(0, SIZE * 2)))
    last = draw(st.one_of(st.none(), st.integers(0, SIZE * 2)))
    return f"bytes={'' if first is None else first}-{'' if last is None else last}"


def model_range(header: str, size: int) -> tuple[int, int] | str | None:
    """The RFC 9110 reading of a single `bytes=` range, written independently of the server."""
    first, _, last = header.removeprefix("bytes=").partition("-")
    if first == "" and last == "":
        return None
    if first == "":
        return "416" if int(last) == 0 else (max(0, size - int(last)), size)
    if last != "" and int(last) < int(first):
        return None
    if int(first) >= size:
        return "416"
    return int(first), size if last == "" else min(int(last) + 1, size)


def assert_parsed_as_the_model(header: str, size: int) -> None:
    expected = model_range(header, size)
    if expected == "416":
        with pytest.raises(RangeNotSatisfiable):
            parse_byte_range(header, size)
    else:
        assert parse_byte_range(header, size) == expected


@given(header=range_headers(), size=st.integers(1, 5000))
def test_parse_byte_range_matches_the_rfc(header: str, size: int) -> None:
    assert_parsed_as_the_model(header, size)


@given(st.text(max_size=40))
def test_parse_byte_range_never_crashes(header: str) -> None:
    try:
        result = parse_byte_range(header, 100)
    except RangeNotSatisfiable:
        return
    assert result is None or 0 <= result[0] < result[1] <= 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real server process holding PAYLOAD; yields (base url, digest)."""
    data_dir = tmp_path_factory.mktemp("files") / "data"
    with RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="never") as proc:
        digest = blake3_hex(PAYLOAD)
        done = subprocess.run(
            ["curl", "-sS", "-X", "PUT", "--data-binary", "@-", f"{proc.url}/blobs/{digest}"],
            input=PAYLOAD,
            capture_output=True,
            check=True,
        )
        assert b'"stored"' in done.stdout
        yield proc.url, digest


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl; returns (status, headers of the last response, body)."""
    done = subprocess.run(["curl", "-sS", "-D", "-", *args], capture_output=True, check=True)
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@given(header=range_headers())
@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_ranges_over_a_real_socket_with_curl(server: tuple[str, str], header: str) -> None:
    url, digest = server
    status, headers, body = curl("-H", f"Range: {header}", f"{url}/files/{digest}")
    expected = model_range(header, SIZE)
    if expected is None:
        assert (status, body) == (200, PAYLOAD)
    elif isinstance(expected, tuple):
        start, end = expected
        assert (status, body) == (206, PAYLOAD[start:end])
        assert headers["content-range"] == f"bytes {start}-{end - 1}/{SIZE}"
    else:
        assert expected == "416"
        assert status == 416
        assert headers["content-range"] == f"bytes */{SIZE}"
    if status != 416:
        assert headers["etag"] == f'"{digest}"'


def test_download_headers_with_curl(server: tuple[str, str]) -> None:
    url, digest = server
    status, headers, body = curl(f"{url}/files/{digest}?download=1")
    assert (status, body) == (200, PAYLOAD)
    assert headers["etag"] == f'"{digest}"'
    assert headers["cache-control"] == CACHE_FOREVER
    assert headers["accept-ranges"] == "bytes"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-length"] == str(SIZE)
    assert headers["content-disposition"] == content_disposition("unnamed")
    status, headers, body = curl("-I", "-o", "/dev/null", f"{url}/files/{digest}")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(SIZE)
    status, headers, body = curl("-H", f'If-None-Match: "{digest}"', f"{url}/files/{digest}")
    assert (status, body) == (304, b"")
    status, headers, body = curl("-r", "10-19", f"{url}/files/{digest}")
    assert (status, body) == (206, PAYLOAD[10:20])


# -- attachment names and active content -------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "report.pdf",
        "quo\"te's.txt",
        "über straße.txt",
        "日本語 ファイル.png",
        "a;b=c,%20.bin",
        "dir/sub/leaf.txt",
        "C:\\Users\\me\\photo.jpg",
    ],
)
async def test_download_names_survive_any_characters(client: Client, name: str) -> None:
    digest = blake3_hex(PAYLOAD)
    put = await client.put(f"/blobs/{digest}", data=PAYLOAD, headers={"X-Filename": urllib.parse.quote(name)})
    assert put.status == 201
    response = await client.get(f"/files/{digest}", params={"download": "1"})
    assert response.status == 200
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert disposition.isascii()
    assert response.content_disposition is not None
    assert response.content_disposition.filename == name.replace("\\", "/").rsplit("/", 1)[-1]


async def test_name_parameter_sets_the_attachment_name(client: Client) -> None:
    digest = await upload(client, PAYLOAD, "original.bin")
    response = await client.get(f"/files/{digest}", params={"name": "chosen é.bin"})
    assert response.content_disposition is not None
    assert response.content_disposition.type == "attachment"
    assert response.content_disposition.filename == "chosen é.bin"
    original = await client.get(f"/files/{digest}?download=true")
    assert original.content_disposition is not None
    assert original.content_disposition.filename == "original.bin"


@pytest.mark.parametrize(
    ("payload", "mime"),
    [
        (b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>\n", "text/html"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>\n', "svg"),
        (b'<?xml version="1.0"?>\n<note><to>x</to></note>\n', "xml"),
    ],
)
async def test_active_content_is_sandboxed(client: Client, payload: bytes, mime: str) -> None:
    digest = await upload(client, payload, "page.html")
    response = await client.get(f"/files/{digest}")
    assert response.status == 200
    assert mime in response.headers["Content-Type"]
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- accel redirect ---------------------------------------------------------------------------


async def test_accel_redirect_hands_the_bytes_to_nginx(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, accel_redirect="/_rhinobox_blobs")))
    digest = await upload(client, PAYLOAD, "notes.bin")
    response = await client.get(f"/files/{digest}", params={"download": "1"})
    assert response.status == 200
    assert await response.read() == b""
    assert response.headers["X-Accel-Redirect"] == f"/_rhinobox_blobs/{digest[:2]}/{digest}"
    assert_blob_headers(response.headers, digest, "application/octet-stream")
    assert response.headers["Content-Disposition"] == content_disposition("notes.bin")
    assert (data_dir / "blobs" / digest[:2] / digest).read_bytes() == PAYLOAD  # where nginx will look
    cached = await client.get(f"/files/{digest}", headers={"If-None-Match": f'"{digest}"'})
    assert cached.status == 304
    assert "X-Accel-Redirect" not in cached.headers


# -- bad and unknown hashes --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/files/{bad}", "/files/{bad}/meta"])
@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, "0" * 65, "..%2F..%2Fetc%2Fpasswd"])
async def test_malformed_hash_is_400(client: Client, data_dir: Path, path: str, bad: str) -> None:
    response = await client.get(path.format(bad=bad))
    assert response.status in (400, 404)  # an encoded slash may not even route
    if response.status == 400:
        await assert_error(response, 400, "bad_hash")
    assert str(data_dir) not in await response.text()


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
async def test_unknown_hash_is_404(client: Client, data_dir: Path, method: str) -> None:
    response = await client.request(method, f"/files/{'ab' * 32}")
    assert response.status == 404
    if method != "HEAD":
        await assert_error(response, 404, "not_found")
        assert str(data_dir) not in str(await response.json())


async def test_bad_download_flag_is_400(client: Client) -> None:
    digest = await upload(client, PAYLOAD)
    response = await client.get(f"/files/{digest}", params={"download": "maybe"})
    await assert_error(response, 400, "invalid_parameter")


# -- metadata ----------------------------------------------------------------------------------


async def test_meta_lists_every_upload(client: Client) -> None:
    digest = await upload(client, PAYLOAD, "first.bin", category="Trips/2024", comment="from the camera")
    await upload(client, PAYLOAD, "second.bin")
    await upload(client, PAYLOAD, "third.bin")
    response = await client.get(f"/files/{digest}/meta")
    assert response.status == 200
    meta = await response.json()
    assert (meta["hash"], meta["size"], meta["mime"], meta["category"]) == (
        digest,
        SIZE,
        "application/octet-stream",
        "other/octet-stream",
    )
    assert meta["upload_count"] == 3
    assert meta["first_upload_at"] <= meta["last_upload_at"]
    assert meta["first_upload_at"].endswith("Z")
    assert [u["name"] for u in meta["uploads"]] == ["first.bin", "second.bin", "third.bin"]
    first = meta["uploads"][0]
    assert (first["hint"], first["comment"], first["category"]) == (
        "trips/2024",
        "from the camera",
        "other/octet-stream/trips/2024",
    )
    assert meta["next"] is None


async def test_meta_pages_through_uploads(client: Client) -> None:
    digest = ""
    for i in range(5):
        digest = await upload(client, PAYLOAD, f"copy-{i}.bin")
    names: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        meta = await (await client.get(f"/files/{digest}/meta", params=params)).json()
        assert len(meta["uploads"]) <= 2
        names += [u["name"] for u in meta["uploads"]]
        cursor = meta["next"]
        if cursor is None:
            break
    assert names == [f"copy-{i}.bin" for i in range(5)]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"cursor": "-1"}])
async def test_meta_bad_paging_is_400(client: Client, params: dict[str, str]) -> None:
    digest = await upload(client, PAYLOAD)
    response = await client.get(f"/files/{digest}/meta", params=params)
    await assert_error(response, 400, "invalid_parameter")


# -- listing -----------------------------------------------------------------------------------


async def list_all(client: Client, **params: str) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/files", params=query)
        assert response.status == 200, await response.text()
        body = await response.json()
        files += body["files"]
        cursor = body["next"]
        if cursor is None:
            return files


async def test_listing_filters_and_pages(client: Client) -> None:
    hashes = {}
    for kind, seed, name in [
        ("png", 1, "Beach.PNG"),
        ("jpeg", 2, "beach-2.jpg"),
        ("pdf", 3, "invoice.pdf"),
        ("gif", 4, "anim.gif"),
    ]:
        _, payload = make_sample(kind, seed)
        hashes[kind] = await upload(client, payload, name)
    listed = await list_all(client, limit="1")
    assert [f["hash"] for f in listed] == [hashes[k] for k in ("gif", "pdf", "jpeg", "png")]
    assert listed[0]["name"] == "anim.gif"
    assert listed[0]["url"] == f"/files/{hashes['gif']}"
    assert [f["hash"] for f in await list_all(client, category="images")] == [
        hashes["gif"],
        hashes["jpeg"],
        hashes["png"],
    ]
    assert [f["hash"] for f in await list_all(client, category="Images/PNG/")] == [hashes["png"]]
    assert [f["hash"] for f in await list_all(client, mime="application/pdf")] == [hashes["pdf"]]
    assert [f["hash"] for f in await list_all(client, name="BEACH")] == [hashes["jpeg"], hashes["png"]]
    sizes = {f["hash"]: f["size"] for f in listed}
    small = min(sizes.values())
    assert [f["size"] for f in await list_all(client, max_size=str(small))] == [small]
    assert all(f["size"] >= 100 for f in await list_all(client, min_size="100"))
    assert await list_all(client, since="2999-01-01T00:00:00Z") == []
    assert len(await list_all(client, since="2000-01-01", until="2999-01-01")) == 4
    assert len(await list_all(client, until="946684800")) == 0


async def test_listing_stays_correct_while_uploads_continue(client: Client) -> None:
    first = [await upload(client, f"early {i}".encode()) for i in range(12)]
    seen: list[str] = []
    cursor = None
    late = 0
    while True:
        body = await (
            await client.get("/files", params={"limit": "5", **({"cursor": cursor} if cursor else {})})
        ).json()
        seen += [f["hash"] for f in body["files"]]
        await upload(client, f"late {late}".encode())  # new content arrives between pages
        await upload(client, b"early 3")  # and a duplicate of something already listed
        late += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == list(reversed(first))


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"min_size": "-1"},
        {"max_size": "1.5"},
        {"since": "yesterday"},
        {"until": "2024-13-45"},
        {"cursor": "abc"},
        {"cursor": "0"},
        {"categroy": "images"},
    ],
)
async def test_listing_bad_parameters_are_400(client: Client, data_dir: Path, params: dict[str, str]) -> None:
    await upload(client, PAYLOAD)
    before = sorted(blob_files(data_dir))
    response = await client.get("/files", params=params)
    await assert_error(response, 400, "invalid_parameter")
    assert sorted(blob_files(data_dir)) == before


async def test_listing_default_limit_is_100(client: Client) -> None:
    response = await client.post("/ingest", data=form([(f"f{i}.txt", f"file {i}".encode()) for i in range(105)]))
    assert response.status == 200
    body = await (await client.get("/files")).json()
    assert len(body["files"]) == 100
    assert body["next"] is not None
    rest = await (await client.get("/files", params={"cursor": body["next"]})).json()
    assert len(rest["files"]) == 5
    assert rest["next"] is None


# -- delete ------------------------------------------------------------------------------------


async def test_delete_removes_blob_records_and_listing(client: Client, data_dir: Path) -> None:
    digest = await upload(client, PAYLOAD, "gone.bin")
    keep = await upload(client, b"keep me")
    response = await client.delete(f"/files/{digest}")
    assert response.status == 204
    assert digest not in blob_files(data_dir)
    assert keep in blob_files(data_dir)
    assert (await client.get(f"/files/{digest}")).status == 404
    assert (await client.get(f"/files/{digest}/meta")).status == 404
    assert [f["hash"] for f in await list_all(client)] == [keep]
    assert [f["hash"] for f in await list_all(client, name="gone")] == []
    await assert_error(await client.delete(f"/files/{digest}"), 404, "not_found")
    assert spool_files(data_dir) == []


async def test_upload_after_delete_stores_again(client: Client, data_dir: Path) -> None:
    digest = await upload(client, PAYLOAD)
    assert (await client.delete(f"/files/{digest}")).status == 204
    response = await client.post("/ingest", data=form([("back.bin", PAYLOAD)]))
    assert (await response.json())["results"][0]["status"] == "stored"
    assert blob_files(data_dir)[digest].read_bytes() == PAYLOAD
    meta = await (await client.get(f"/files/{digest}/meta")).json()
    assert [u["name"] for u in meta["uploads"]] == ["back.bin"]


async def test_delete_bad_hash_changes_nothing(client: Client, data_dir: Path) -> None:
    digest = await upload(client, PAYLOAD)
    await assert_error(await client.delete(f"/files/{digest.upper()}"), 400, "bad_hash")
    assert digest in blob_files(data_dir)
    assert (await client.get(f"/files/{digest}")).status == 200


def test_content_disposition_is_header_safe() -> None:
    for name in ["\u202eevil.exe", "x\r\nSet-Cookie: a=b", "", "   ", "🙂.png"]:
        value = content_disposition(name)
        assert value.isascii()
        assert "\r" not in value
        assert "\n" not in value
        encoded = value.split("filename*=UTF-8''", 1)[1]
        assert urllib.parse.unquote(encoded) == (name.replace("\\", "/").rsplit("/", 1)[-1] or name)


async def test_delete_is_synced_before_it_answers(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """With RHINOBOX_FSYNC=always (the default) the unlink is made durable before the 204."""
    digest = await upload(client, PAYLOAD)
    store = client.app[STORE]
    assert isinstance(store, LocalBlobStore)
    unlinked_at: list[int] = []
    delete = store.delete

    def counted_delete(d: str) -> bool:
        unlinked_at.append(store.syncs)
        return delete(d)

    monkeypatch.setattr(store, "delete", counted_delete)
    assert (await client.delete(f"/files/{digest}")).status == 204
    assert store.syncs > unlinked_at[0], "no sync began after the unlink"


async def test_blob_missing_on_disk_is_404_without_paths(download_client: Client, data_dir: Path) -> None:
    """A catalog entry whose bytes were lost (an operator deleted them) answers 404, not a broken 200."""
    digest = await upload(download_client, PAYLOAD)
    blob_files(data_dir)[digest].unlink()
    response = await download_client.get(f"/files/{digest}")
    await assert_error(response, 404, "not_found")
    body = await response.text()
    assert str(data_dir) not in body
    assert "blobs/" not in body


# -- blobs that vanish, huge numbers ---------------------------------------------------------


async def test_download_racing_a_delete_is_a_json_404(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store found the file, then a DELETE removed it before it was opened: JSON 404, nothing cacheable."""
    html = b"<!doctype html><html><body>hello</body></html>"
    digest = await upload(client, html, "page.html")
    store = client.app[STORE]
    real = store.local_path

    def racing(wanted: str) -> Path | None:
        path = real(wanted)
        store.delete(wanted)  # the concurrent DELETE lands here
        return path

    monkeypatch.setattr(store, "local_path", racing)
    for method in ("GET", "HEAD"):
        response = await client.request(method, f"/files/{digest}")
        assert response.status == 404
        assert "ETag" not in response.headers
        assert response.headers.get("Cache-Control") != CACHE_FOREVER
        assert response.headers["Content-Type"].startswith("application/json")
        if method == "GET":
            await assert_error(response, 404, "not_found")


async def test_file_response_finding_no_file_sends_no_blob_headers(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Defence in depth: if the file vanishes after the handler looked, aiohttp's own 404 is not cacheable."""
    digest = "ab" * 32

    async def handler(request: web.Request) -> web.StreamResponse:
        headers: CIMultiDict[str] = CIMultiDict()
        headers["Content-Type"] = "text/html"
        headers["ETag"] = f'"{digest}"'
        headers["Cache-Control"] = CACHE_FOREVER
        headers["Content-Disposition"] = content_disposition("x.html")
        return BlobFileResponse(tmp_path / "gone", digest, None, headers)

    app = web.Application()
    app.router.add_get("/blob", handler)
    client = await aiohttp_client(app)
    response = await client.get("/blob")
    assert response.status == 404
    for name in ("ETag", "Content-Disposition"):
        assert name not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert "text/html" not in response.headers.get("Content-Type", "")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_head_and_get_agree_on_a_blob_missing_on_disk(
    download_client: Client, data_dir: Path, method: str
) -> None:
    digest = await upload(download_client, PAYLOAD)
    assert (await download_client.head(f"/files/{digest}")).status == 200
    blob_files(data_dir)[digest].unlink()
    response = await download_client.request(method, f"/files/{digest}")
    assert response.status == 404
    assert "ETag" not in response.headers
    assert response.headers.get("Cache-Control") != CACHE_FOREVER


HUGE = "9" * 5000  # past int()'s 4,300-digit limit (a header value may hold 8,190 bytes)


@pytest.mark.parametrize(
    ("header", "status", "expected"),
    [
        (f"bytes={HUGE}-", 416, b""),  # starts past the end
        (f"bytes={'9' * 3000}-{'9' * 3500}", 416, b""),
        (f"bytes=0-{HUGE}", 206, PAYLOAD),  # the end is clipped
        (f"bytes=-{HUGE}", 206, PAYLOAD),  # a suffix longer than the blob is all of it
        (f"bytes={HUGE}-{'9' * 3000}", 200, PAYLOAD),  # last < first: malformed, ignored
        (f"bytes={'0' * 4000}5-{'0' * 4000}9", 206, PAYLOAD[5:10]),  # leading zeros change nothing
    ],
)
async def test_huge_range_numbers_are_read_exactly(
    download_client: Client, header: str, status: int, expected: bytes
) -> None:
    digest = await upload(download_client, PAYLOAD)
    response = await download_client.get(f"/files/{digest}", headers={"Range": header})
    assert response.status == status
    if status == 416:
        assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    else:
        assert await response.read() == expected


@given(
    first=st.one_of(st.none(), st.integers(0, 10**40)),
    last=st.one_of(st.none(), st.integers(0, 10**40)),
    size=st.integers(1, 5000),
)
def test_parse_byte_range_matches_the_rfc_for_long_numbers(first: int | None, last: int | None, size: int) -> None:
    assert_parsed_as_the_model(f"bytes={'' if first is None else first}-{'' if last is None else last}", size)


def test_huge_range_over_a_real_socket_with_curl(server: tuple[str, str]) -> None:
    url, digest = server
    status, headers, _ = curl("-H", f"Range: bytes={HUGE}-", f"{url}/files/{digest}")
    assert (status, headers["content-range"]) == (416, f"bytes */{SIZE}")
    status, _, body = curl("-H", f"Range: bytes=0-{HUGE}", f"{url}/files/{digest}")
    assert (status, body) == (206, PAYLOAD)


TOO_BIG = [str(2**63), HUGE]


@pytest.mark.parametrize("name", ["min_size", "max_size", "cursor", "limit"])
@pytest.mark.parametrize("value", TOO_BIG)
async def test_listing_numbers_past_int64_are_400(client: Client, name: str, value: str) -> None:
    await upload(client, PAYLOAD)
    response = await client.get("/files", params={name: value})
    assert len(await assert_error(response, 400, "invalid_parameter")) < 200


@pytest.mark.parametrize("name", ["min_size", "max_size", "cursor"])
async def test_listing_accepts_the_largest_int64(client: Client, name: str) -> None:
    digest = await upload(client, PAYLOAD)
    response = await client.get("/files", params={name: str(2**63 - 1)})
    assert response.status == 200, await response.text()
    hashes = [f["hash"] for f in (await response.json())["files"]]
    assert hashes == ([] if name == "min_size" else [digest])


@pytest.mark.parametrize("value", [*TOO_BIG, "0" * 5000 + str(2**63)])
async def test_meta_cursor_past_int64_is_400(client: Client, value: str) -> None:
    digest = await upload(client, PAYLOAD)
    response = await client.get(f"/files/{digest}/meta", params={"cursor": value})
    await assert_error(response, 400, "invalid_parameter")


def test_listing_numbers_past_int64_with_curl(server: tuple[str, str]) -> None:
    url, digest = server
    for query in (f"min_size={2**63}", f"cursor={HUGE}"):
        status, _, body = curl(f"{url}/files?{query}")
        assert status == 400
        assert b'"invalid_parameter"' in body
    status, _, body = curl(f"{url}/files/{digest}/meta?cursor={2**63}")
    assert (status, b'"invalid_parameter"' in body) == (400, True)
