"""Generated requests (schemathesis, from /openapi.json's document) against a real server process.

Every operation, on a server without tokens, and on one with tokens both with a read-write token and
without any: no 5xx, every status, content type and required header documented, every JSON answer
matching its schema. Examples per operation are bounded so the whole run stays within a few minutes
on two cores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rhinobox.http.openapi import build_openapi
from tests.server_process import RhinoBoxProcess

SCHEMA: Final = schemathesis.openapi.from_dict(build_openapi())
# Resumable-upload bodies are raw bytes, sent as schemathesis sends application/octet-stream.
schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/partial-upload"], "application/octet-stream"
)
EXAMPLES: Final = 100  # per operation and server mode: about 7,000 requests in all
TOKEN: Final = "schemathesis-rw-token"
STATEFUL_SCENARIOS: Final = 120  # each up to 8 linked calls
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhinoBoxProcess]:
    """A server without API tokens: everyone may read and write."""
    data_dir = tmp_path_factory.mktemp("schemathesis-open") / "data"
    with RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="never") as process:  # answers matter here, not durability
        yield process


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RhinoBoxProcess]:
    """A server with one read-write API token."""
    data_dir = tmp_path_factory.mktemp("schemathesis-token") / "data"
    with RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="never", RHINOBOX_API_TOKENS=TOKEN) as process:
        yield process


def hypothesis_bounds(test: Callable[..., None]) -> Callable[..., None]:
    """EXAMPLES per operation, reproducible, no example database written into the tree."""
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(test)


@SCHEMA.parametrize()
@hypothesis_bounds
def test_generated_requests_on_an_open_server(case: Case[Any], open_server: RhinoBoxProcess) -> None:
    case.call_and_validate(base_url=open_server.url, checks=CHECKS)


@SCHEMA.parametrize()
@hypothesis_bounds
def test_generated_requests_with_a_token(case: Case[Any], token_server: RhinoBoxProcess) -> None:
    case.call_and_validate(base_url=token_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


@SCHEMA.parametrize()
@hypothesis_bounds
def test_generated_requests_without_a_token(case: Case[Any], token_server: RhinoBoxProcess) -> None:
    case.call_and_validate(base_url=token_server.url, checks=CHECKS)


def run_stateful(url: str, headers: dict[str, str]) -> None:
    """Scenarios that follow the document's links: create an upload then append to it, ingest then read."""
    base = SCHEMA.as_state_machine()

    class Scenarios(base):  # type: ignore[valid-type, misc]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": url, "headers": headers}

        def validate_response(self, response: Any, case: Case[Any], *args: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs={"base_url": url})

    Scenarios.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=8,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )


def test_linked_scenarios_on_an_open_server(open_server: RhinoBoxProcess) -> None:
    run_stateful(open_server.url, {})


def test_linked_scenarios_with_a_token(token_server: RhinoBoxProcess) -> None:
    run_stateful(token_server.url, {"Authorization": f"Bearer {TOKEN}"})
