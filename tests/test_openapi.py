"""The OpenAPI document: valid OpenAPI 3.1, covering every route, and true of real answers to real flows."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from rhinobox.app import create_app
from rhinobox.http.openapi import OPENAPI_PATH, build_openapi
from rhinobox.http.routes import ROUTES
from tests.helpers import (
    AiohttpClient,
    Client,
    blake3_hex,
    field_part,
    form,
    make_settings,
    multipart,
    multipart_headers,
    png,
    read_events,
    wait_done,
)

SPEC: Final = build_openapi()
NOT_API: Final = frozenset({"/", "/assets/{name}"})  # the web page, not part of the API
TUS: Final = {"Tus-Resumable": "1.0.0"}
OCTETS: Final = {**TUS, "Content-Type": "application/offset+octet-stream"}


def operation(method: str, path: str) -> dict[str, Any]:
    """The spec's operation for a concrete `path`, e.g. /files/<hash> -> /files/{hash}."""
    for template, item in SPEC["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        if re.fullmatch(pattern, path) and method.lower() in item:
            op: dict[str, Any] = item[method.lower()]
            return op
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def check(method: str, path: str, response: aiohttp.ClientResponse, body: bytes) -> None:
    """The answer's status, required headers, content type and JSON body are as the document says."""
    declared = operation(method, path)["responses"]
    assert str(response.status) in declared, f"{method} {path}: status {response.status} not in {sorted(declared)}"
    spec = declared[str(response.status)]
    for name, header in spec.get("headers", {}).items():
        assert not header.get("required") or name in response.headers, f"{method} {path}: no {name}"
    content = spec.get("content")
    if content is None or method == "HEAD":
        assert body == b"", f"{method} {path} {response.status}: a body where none is declared"
        return
    media = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert media in content or "*/*" in content, f"{method} {path}: {media} not in {sorted(content)}"
    if media == "application/json":
        schema = {**content[media]["schema"], "components": SPEC["components"]}
        OAS31Validator(schema).validate(json.loads(body))


async def call(client: Client, method: str, path: str, **kwargs: Any) -> tuple[aiohttp.ClientResponse, bytes]:
    """One request, its answer checked against the document."""
    response = await client.request(method, path, **kwargs)
    body = await response.read()
    check(method, path.split("?")[0], response, body)
    return response, body


def schema_of(name: str) -> OAS31Validator:
    return OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]})


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1")


def test_every_route_is_documented_and_every_documented_path_is_routed() -> None:
    routed = {(path.rstrip("/") or "/", method.lower()) for method, path, _ in ROUTES if path not in NOT_API}
    documented = {(path, method) for path, item in SPEC["paths"].items() for method in item if method != "parameters"}
    head_of_get = {(path, "head") for path, method in documented if method == "head"}
    assert routed - documented == set()
    assert documented - routed - head_of_get == set()


async def test_the_document_is_served(client: Client) -> None:
    response, body = await call(client, "GET", OPENAPI_PATH)
    assert response.status == 200
    assert json.loads(body) == json.loads(json.dumps(SPEC))


async def test_ingest_flows_match_the_document(client: Client) -> None:
    first, second = png(1), png(2)
    response, _ = await call(client, "POST", "/ingest", data=form([("a.png", first), ("b.png", second)]))
    assert response.status == 200
    response, _ = await call(client, "POST", "/ingest/media", data=form([("a.png", first)], category="x/y"))
    assert response.status == 200
    response, _ = await call(client, "POST", "/ingest", data=form([("c.png", png(3)), ("empty", b"")]))
    assert response.status == 207
    response, _ = await call(client, "POST", "/ingest", data=form([("empty", b"")]))
    assert response.status == 422
    response, _ = await call(client, "POST", "/ingest", data=b"plain", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    only_a_field = multipart(field_part("comment", "no files"))
    response, _ = await call(client, "POST", "/ingest", data=only_a_field, headers=multipart_headers())
    assert response.status == 400
    encoded = {"Content-Encoding": "gzip", "Content-Type": "multipart/form-data; boundary=x"}
    response, _ = await call(client, "POST", "/ingest", data=gzip.compress(b"--x--\r\n"), headers=encoded)
    assert response.status == 415
    response, _ = await call(client, "POST", "/ingest?async=maybe", data=form([("a.png", first)]))
    assert response.status == 400


async def test_job_flows_match_the_document(client: Client) -> None:
    response, body = await call(client, "POST", "/ingest?async=true", data=form([("j.png", png(4)), ("e", b"")]))
    assert response.status == 202
    job_id = json.loads(body)["job"]
    await wait_done(client, job_id)
    response, body = await call(client, "GET", f"/jobs/{job_id}")
    assert json.loads(body)["state"] == "done"
    events = await client.get(f"/jobs/{job_id}/events")
    assert events.status == 200
    assert events.headers["Content-Type"].startswith("text/event-stream")
    seen = [(kind, data) async for kind, data in read_events(events)]
    assert [kind for kind, _ in seen] == ["state", "end"]
    schema_of("Job").validate(seen[-1][1])
    response, _ = await call(client, "GET", "/jobs/nope")
    assert response.status == 404
    response, _ = await call(client, "GET", "/jobs/nope/events")
    assert response.status == 404


async def test_file_flows_match_the_document(client: Client) -> None:
    payload = png(5)
    digest = blake3_hex(payload)
    await call(client, "POST", "/ingest", data=form([("f.png", payload)], comment="hello"))
    for path in ("/files", "/files?limit=1&category=images&min_size=1&since=0", f"/files/{digest}/meta"):
        response, _ = await call(client, "GET", path)
        assert response.status == 200
    response, body = await call(client, "GET", f"/files/{digest}?download=1")
    assert (response.status, body) == (200, payload)
    response, _ = await call(client, "HEAD", f"/files/{digest}")
    assert response.status == 200
    response, _ = await call(client, "GET", f"/files/{digest}", headers={"Range": "bytes=0-3"})
    assert response.status == 206
    response, _ = await call(client, "GET", f"/files/{digest}", headers={"Range": "bytes=99999-"})
    assert response.status == 416
    response, _ = await call(client, "GET", f"/files/{digest}", headers={"If-None-Match": f'"{digest}"'})
    assert response.status == 304
    response, _ = await call(client, "GET", f"/files/{digest}", headers={"If-Match": '"other"'})
    assert response.status == 412
    for path in ("/files/nothex", f"/files/{'0' * 64}", f"/files/{'0' * 64}/meta", "/files?limit=0", "/files?x=1"):
        response, _ = await call(client, "GET", path)
        assert response.status in (400, 404)
    for path in ("/stats", "/categories", "/healthz", "/metrics"):
        response, _ = await call(client, "GET", path)
        assert response.status == 200
    response, _ = await call(client, "DELETE", f"/files/{digest}")
    assert response.status == 204
    response, _ = await call(client, "DELETE", f"/files/{digest}")
    assert response.status == 404


async def test_blob_and_category_flows_match_the_document(client: Client) -> None:
    payload = png(6)
    digest = blake3_hex(payload)
    response, body = await call(client, "POST", "/blobs/missing", json={"hashes": [digest]})
    assert json.loads(body) == {"missing": [digest]}
    for bad in ({"hashes": ["x"]}, {"nope": 1}, [1] * 3):
        response, _ = await call(client, "POST", "/blobs/missing", json=bad)
        assert response.status == 400
    response, _ = await call(client, "PUT", f"/blobs/{digest}", data=payload, headers={"X-Filename": "b%C3%A9.png"})
    assert response.status == 201
    response, _ = await call(client, "PUT", f"/blobs/{digest}", data=b"")
    assert response.status == 200
    response, _ = await call(client, "PUT", f"/blobs/{'1' * 64}", data=b"not that")
    assert response.status == 422
    response, _ = await call(client, "PUT", f"/blobs/{'2' * 64}", data=b"")
    assert response.status == 422
    response, rules = await call(client, "GET", "/categories")
    response, _ = await call(client, "PUT", "/categories", data=rules, headers={"Content-Type": "application/json"})
    assert response.status == 200
    response, _ = await call(client, "PUT", "/categories", json={"mime": {"image/*": "../x"}})
    assert response.status == 400


async def test_resumable_upload_flows_match_the_document(client: Client) -> None:
    payload = png(7)
    response, _ = await call(client, "OPTIONS", "/uploads")
    assert response.status == 204
    metadata = "filename " + base64.b64encode(b"r.png").decode()
    headers = {**TUS, "Upload-Length": str(len(payload)), "Upload-Metadata": metadata}
    response, _ = await call(client, "POST", "/uploads", headers=headers)
    assert response.status == 201
    location = response.headers["Location"]
    response, _ = await call(client, "HEAD", location, headers=TUS)
    assert response.headers["Upload-Offset"] == "0"
    response, _ = await call(client, "PATCH", location, data=payload[:10], headers={**OCTETS, "Upload-Offset": "5"})
    assert response.status == 409
    response, _ = await call(client, "PATCH", location, data=payload[:10], headers={**OCTETS, "Upload-Offset": "0"})
    assert response.status == 204
    response, _ = await call(client, "PATCH", location, data=payload[10:], headers={**OCTETS, "Upload-Offset": "10"})
    assert response.status == 204
    schema_of("FileResult").validate(json.loads(response.headers["RhinoBox-Result"]))
    response, body = await call(client, "GET", location)
    assert json.loads(body)["complete"] is True
    response, _ = await call(client, "POST", "/uploads", headers={**TUS, "Upload-Defer-Length": "1"})
    other = response.headers["Location"]
    response, _ = await call(client, "DELETE", other, headers=TUS)
    assert response.status == 204
    for method in ("GET", "DELETE"):
        response, _ = await call(client, method, other, headers=TUS)
        assert response.status == 404
    response, _ = await call(client, "POST", "/uploads", headers={"Tus-Resumable": "0.2.2", "Upload-Length": "1"})
    assert response.status == 412
    response, _ = await call(client, "POST", "/uploads", headers={**TUS, "Upload-Length": "x"})
    assert response.status == 400


@pytest.fixture
async def token_client(aiohttp_client: AiohttpClient, data_dir: Path) -> Client:
    return await aiohttp_client(create_app(make_settings(data_dir, api_tokens="writer,reader:ro")))


async def test_auth_answers_match_the_document(token_client: Client) -> None:
    reader = {"Authorization": "Bearer reader"}
    for path in ("/files", "/stats", "/categories", "/metrics", OPENAPI_PATH, f"/uploads/{'a' * 32}"):
        response, _ = await call(token_client, "GET", path)
        assert response.status == 401
    response, _ = await call(token_client, "GET", "/healthz")
    assert response.status == 200
    response, _ = await call(token_client, "POST", "/ingest", data=form([("a.png", png(8))]), headers=reader)
    assert response.status == 403
    response, _ = await call(token_client, "DELETE", f"/files/{'0' * 64}", headers=reader)
    assert response.status == 403
    response, _ = await call(token_client, "POST", "/uploads", headers={**TUS, **reader, "Upload-Length": "1"})
    assert response.status == 403
