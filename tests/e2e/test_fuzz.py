"""Schemathesis against each service's own OpenAPI document: whatever a client sends, no 5xx, and
every refusal (4xx) is an RFC 9457 problem with ``type``, ``title``, ``status``, ``detail`` and
``request_id``.

Each service is fuzzed on its own port (not through the gateway), as the principal that may call
the operation, so that generated requests pass authentication and reach the validators and the
domain rules behind it. Generation is stateless, positive and negative (schemathesis' examples,
coverage and fuzzing phases), NUL included (lone surrogates are test_hostile_input's), at most
``EXAMPLES_PER_OPERATION`` fuzzed cases per operation and derandomised, so that a CI run repeats
the one before it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import requests
import schemathesis
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error

from services.demo import DemoCredentials
from tests.e2e.client import person_token, system_token
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]

FUZZED_SERVICES = ("gateway", "registry", "exchange", "audit")
EXAMPLES_PER_OPERATION = 60
PROBLEM_FIELDS = ("type", "title", "status", "detail", "request_id")

# Operations not fuzzed at all, each with its reason ("METHOD /path", as in the OpenAPI document).
EXCLUDED: dict[str, str] = {
    "GET /healthz": "liveness probe: takes no input, and answers plain 200 by design",
    "GET /readyz": "readiness probe: takes no input; its 503 while a dependency is down is its contract",
    "GET /metrics": "Prometheus text exposition: takes no input, not a JSON API",
}

# Operations where fuzzing finds a 5xx that is not fixed yet: "METHOD /path" -> the reproduction
# (request and traceback). They are left out of the run until fixed; empty is the goal.
KNOWN_SERVER_ERRORS: dict[str, str] = {}


@dataclass(frozen=True)
class Principals:
    """The bearer token each kind of caller uses; which one an operation gets is `for_operation`."""

    admin: dict[str, str]  # platform administrator
    provider_admin: dict[str, str]  # 市公安局 data_admin (gaj_admin)
    approver: dict[str, str]  # 市公安局 approver (gaj_approver)
    auditor: dict[str, str]
    consumer: dict[str, str]  # 市民政局's consuming system, client_credentials
    client_basic: dict[str, str]  # the same system's client_secret_basic credentials

    def for_operation(self, method: str, path: str) -> dict[str, str]:
        if path == "/oauth2/token":
            return self.client_basic  # so that generated forms get past client authentication
        if path.startswith("/v1/exchange/"):
            return self.consumer
        if path.startswith("/v1/audit/"):
            return self.auditor
        if not path.startswith("/v1/registry/"):
            return self.admin  # the gateway's own operations
        if path.endswith(("/approve", "/reject", "/revoke")):
            return self.approver
        if method == "POST" and path == "/v1/registry/applications":
            return self.consumer  # a consuming system applies for itself
        return self.provider_admin


@pytest.fixture(scope="session")
async def principals(distributed: Stack) -> AsyncIterator[Principals]:
    stack, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        login = await client.post("/v1/auth/login", json={"username": "admin", "password": stack.admin_password})
        assert login.status_code == 200, login.text
        yield Principals(
            admin={"authorization": f"Bearer {login.json()['access_token']}"},
            provider_admin=await person_token(client, "gaj_admin"),
            approver=await person_token(client, "gaj_approver"),
            auditor=await person_token(client, "auditor"),
            consumer=await system_token(client, creds),
            client_basic={
                "authorization": "Basic "
                + base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()
            },
        )


def service_config(base_url: str) -> schemathesis.Config:
    """One schemathesis configuration for every service, built here rather than discovered from a
    file, so that what runs is what this module says."""
    config = schemathesis.Config()
    project = config.projects.default
    project.update(base_url=base_url, request_timeout=30)
    project.generation.update(
        modes=list(GenerationMode),  # valid requests and invalid ones
        max_examples=EXAMPLES_PER_OPERATION,
        deterministic=True,
        # NUL in strings. Lone surrogates are not generated (Hypothesis' characters leave out category
        # Cs, whatever the codec): test_hostile_input sends them by hand.
        allow_x00=True,
        codec="utf-8",
        database="none",  # nothing kept between runs: the run is the same every time
    )
    return config


@pytest.fixture(params=FUZZED_SERVICES)
def service_schema(request: pytest.FixtureRequest, distributed: Stack) -> schemathesis.BaseSchema:
    """The OpenAPI document the service itself serves, from its own port."""
    base_url = f"http://127.0.0.1:{distributed[0].ports[request.param]}"
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=service_config(base_url), timeout=30)


def problem_details(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx is ``application/problem+json`` with the five fields, and says its own status."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/problem+json"), (
        f"{response.status_code} answered as {content_type!r}, not application/problem+json"
    )
    body: Any = json.loads(response.content)
    assert isinstance(body, dict), f"problem body is not an object: {body!r}"
    missing = [field for field in PROBLEM_FIELDS if not body.get(field)]
    assert not missing, f"problem lacks {missing}: {body!r}"
    assert body["status"] == response.status_code, f"problem says {body['status']}, answer is {response.status_code}"
    return None


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy schemas read and write ``Node._nodeid``, which pytest 9.2 no longer
    has (it keeps ``_id``); the attribute is given back for them to use. Only labels depend on it."""
    request.node._nodeid = request.node.nodeid


lazy_schema = schemathesis.pytest.from_fixture("service_schema").exclude(name=[*EXCLUDED, *KNOWN_SERVER_ERRORS])


@lazy_schema.parametrize()
def test_no_server_error_and_every_refusal_is_a_problem(case: Case, principals: Principals) -> None:
    headers = principals.for_operation(case.method.upper(), case.operation.path)
    response = case.call(headers=headers)
    case.validate_response(response, checks=[not_a_server_error, problem_details], headers=headers)


async def test_every_exclusion_names_an_operation(distributed: Stack) -> None:
    """An exclusion whose operation was renamed or removed would silently exclude nothing."""
    labels: set[str] = set()
    async with httpx.AsyncClient(timeout=30.0) as client:
        for service in FUZZED_SERVICES:
            document = (await client.get(f"http://127.0.0.1:{distributed[0].ports[service]}/openapi.json")).json()
            labels |= {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    named = set(EXCLUDED) | set(KNOWN_SERVER_ERRORS)
    assert named <= labels, named - labels
    assert not set(EXCLUDED) & set(KNOWN_SERVER_ERRORS)


def answer(status: int, content_type: str, body: object) -> Response:
    content = json.dumps(body).encode()
    return Response(status, {"content-type": [content_type]}, content, requests.PreparedRequest(), 0.0, verify=True)


GOOD_PROBLEM = {"type": "https://tongban.dev/problems/not-found", "title": "t", "status": 404, "detail": "d"}


@pytest.mark.parametrize(
    "bad",
    [
        answer(404, "application/json", {"detail": "Not Found"}),  # FastAPI's own shape
        answer(404, "application/problem+json", GOOD_PROBLEM),  # no request_id
        answer(404, "application/problem+json", {**GOOD_PROBLEM, "request_id": ""}),
        answer(422, "application/problem+json", {**GOOD_PROBLEM, "request_id": "r1"}),  # says 404
        answer(400, "application/problem+json", ["not", "an", "object"]),
    ],
)
def test_the_problem_check_can_fail(bad: Response) -> None:
    """The check refuses what it must refuse, so a green fuzz run means something."""
    with pytest.raises(AssertionError):
        problem_details(cast(CheckContext, None), bad, cast(Case, None))
    assert (
        problem_details(
            cast(CheckContext, None),
            answer(404, "application/problem+json", {**GOOD_PROBLEM, "request_id": "r1"}),
            cast(Case, None),
        )
        is None
    )
