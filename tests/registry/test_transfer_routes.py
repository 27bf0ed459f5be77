"""The limits the import/export and search routes put on what a client sends, checked on the
registry's own app before any rule runs: an oversized or NUL-bearing ``q``, a malformed filter or
cursor length, an oversized upload. The principal and unit of work are stand-ins: these requests
are refused before either is used (and a stand-in unit of work records that nothing ran)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.common.runtime import current_principal, unit_of_work
from services.common.security import Principal, Role
from services.registry.app import create_app
from services.registry.config import RegistrySettings
from tests.factories import credit_code, person


class Untouched:
    """A unit of work no route may use: any attribute is a failure."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the unit of work was used ({name}) for a request that should be refused")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(RegistrySettings(max_upload_bytes=64 * 1024))
    admin: Principal = person(credit_code(), Role.DATA_ADMIN)

    async def stand_in() -> AsyncIterator[Untouched]:
        yield Untouched()

    app.dependency_overrides[current_principal] = lambda: admin
    app.dependency_overrides[unit_of_work] = stand_in
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as c:
        yield c


@pytest.mark.parametrize(
    "params",
    [
        {"q": "户" * 101},
        {"q": "户籍", "cursor": "x" * 65},
        {"q": "户籍", "limit": "0"},
        {"q": "户籍", "limit": "501"},
        {"q": "户籍", "provider": "not a code"},
        {"q": "户籍", "category": "10a"},
        {"q": "户籍", "share_type": "sometimes"},
        {"q": "户籍", "classification": "secret"},
    ],
)
async def test_bad_search_parameters_are_422_before_anything_runs(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/v1/registry/resources", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/validation")


async def test_a_nul_in_q_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/registry/resources?q=%00")
    assert (response.status_code, response.json()["type"].split("/")[-1]) == (422, "validation")


async def test_an_upload_over_the_limit_is_413_before_it_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/registry/imports/resources",
        content=b"x" * (64 * 1024 + 1),
        headers={"content-type": "text/csv"},
    )
    assert response.status_code == 413
    assert response.json()["type"].endswith("/body-too-large")


async def test_the_stand_in_catches_a_request_that_gets_through(client: httpx.AsyncClient) -> None:
    """The control: a valid search does reach the unit of work, which fails it here (500), so the
    422s above were answered before any rule ran."""
    response = await client.get("/v1/registry/resources", params={"q": "户籍"})
    assert response.status_code == 500
