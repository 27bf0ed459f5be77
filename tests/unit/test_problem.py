"""The shape every service answers with: problem+json errors, request ids, body limit, metrics."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from services.common.errors import Problem
from services.common.http import create_service_app

PROBLEM_JSON = "application/problem+json"
LIMIT = 1024


class Item(BaseModel):
    name: str
    count: int = Field(ge=1)


@asynccontextmanager
async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def build_app() -> FastAPI:
    app = create_service_app(service="t", title="t", version="0", lifespan=no_lifespan, max_body_bytes=LIMIT)

    @app.post("/items")
    async def create_item(item: Item) -> dict[str, object]:
        return {"name": item.name, "count": item.count}

    @app.post("/conflict")
    async def conflict() -> None:
        raise Problem(409, "x", "X")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, object] = response.json()
    assert str(body["type"]).endswith("/" + code)
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_valid_body_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "a", "count": 2})
    assert response.status_code == 200
    assert response.json() == {"name": "a", "count": 2}


async def test_validation_error_is_problem_json_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "a", "count": 0})

    body = assert_problem(response, 422, "validation")
    assert body["title"] == "Request is not valid"
    assert str(body["detail"]).startswith("count: ")
    assert body["errors"] == [
        {"field": "count", "message": "Input should be greater than or equal to 1", "type": "greater_than_equal"}
    ]


async def test_missing_field_is_reported(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"count": 1})
    body = assert_problem(response, 422, "validation")
    assert "name: Field required" in str(body["detail"])


async def test_malformed_json_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", content=b'{"name": ', headers={"content-type": "application/json"})
    assert_problem(response, 422, "validation")


async def test_problem_keeps_its_status_and_type(client: httpx.AsyncClient) -> None:
    response = await client.post("/conflict")
    body = assert_problem(response, 409, "x")
    assert body["type"] == "https://tongban.dev/problems/x"
    assert body["title"] == "X"
    assert body["detail"] == "X"


async def test_body_over_limit_with_content_length_is_413(client: httpx.AsyncClient) -> None:
    payload = orjson.dumps({"name": "a" * (LIMIT + 1), "count": 1})
    response = await client.post("/items", content=payload, headers={"content-type": "application/json"})
    body = assert_problem(response, 413, "body-too-large")
    assert str(LIMIT) in str(body["detail"])


async def test_body_at_limit_is_accepted(client: httpx.AsyncClient) -> None:
    skeleton = orjson.dumps({"name": "", "count": 1})
    payload = orjson.dumps({"name": "a" * (LIMIT - len(skeleton)), "count": 1})
    assert len(payload) == LIMIT
    response = await client.post("/items", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 200


async def test_chunked_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(8):
            yield b"a" * 256
        yield b'", "count": 1}'

    response = await client.post("/items", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    body = assert_problem(response, 413, "body-too-large")
    assert str(LIMIT) in str(body["detail"])


async def test_small_chunked_body_is_accepted(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "a",'
        yield b' "count": 3}'

    response = await client.post("/items", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"name": "a", "count": 3}


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nowhere"), 404, "not-found")


async def test_wrong_method_is_405_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/items"), 405, "method-not-allowed")


async def test_unexpected_error_is_500_problem_with_request_id_and_no_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "rid-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert str(body["type"]).endswith("/internal")
    assert "secret internal detail" not in response.text
    # The detail tells the user to quote request_id, so it must be there.
    assert body["request_id"] == "rid-500"
    assert response.headers.get("x-request-id") == "rid-500"


async def test_request_id_is_echoed_back(client: httpx.AsyncClient) -> None:
    response = await client.post("/conflict", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["request_id"] == "abc-123"


async def test_request_id_is_echoed_on_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", content=b"x" * (LIMIT + 1), headers={"X-Request-ID": "big-1"})
    assert response.status_code == 413
    assert response.headers["x-request-id"] == "big-1"
    assert response.json()["request_id"] == "big-1"


async def test_request_id_is_generated_when_not_sent(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "t"}


async def test_readyz_without_checks_is_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readyz_with_failing_check_is_503_problem() -> None:
    app = build_app()

    async def database() -> None:
        raise ConnectionError("refused")

    app.state.readiness.append(database)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        response = await c.get("/readyz")
    body = assert_problem(response, 503, "not-ready")
    assert "database: failing: refused" in str(body["detail"])


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    await client.post("/conflict")
    await client.get("/no/such/path/12345")

    response = await client.get("/metrics")

    assert response.status_code == 200
    text = response.text
    assert "http_requests_total" in text
    assert 'http_requests_total{method="GET",route="/healthz",service="t",status="200"} 1.0' in text
    assert 'http_requests_total{method="POST",route="/conflict",service="t",status="409"} 1.0' in text
    assert 'http_requests_total{method="GET",route="unmatched",service="t",status="404"} 1.0' in text
    assert "/no/such/path/12345" not in text  # unmatched paths do not create one series each
    assert "http_request_duration_seconds_bucket" in text


async def test_metrics_are_per_app() -> None:
    # Each app has its own registry, so two services in one process do not double count.
    first, second = build_app(), build_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://test") as c:
        await c.get("/healthz")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://test") as c:
        text = (await c.get("/metrics")).text
    assert 'route="/healthz"' not in text


async def test_an_upload_route_takes_the_larger_upload_limit() -> None:
    """A file upload (http.UPLOAD_PREFIXES) may be up to ``max_upload_bytes``; any other body
    keeps ``max_body_bytes``."""
    app = create_service_app(
        service="t", title="t", version="0", lifespan=no_lifespan, max_body_bytes=LIMIT, max_upload_bytes=4 * LIMIT
    )

    @app.post("/v1/registry/imports/resources")
    async def upload(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        accepted = await c.post("/v1/registry/imports/resources", content=b"x" * (3 * LIMIT))
        assert (accepted.status_code, accepted.json()) == (200, {"received": 3 * LIMIT})
        body = assert_problem(
            await c.post("/v1/registry/imports/resources", content=b"x" * (4 * LIMIT + 1)), 413, "body-too-large"
        )
        assert str(4 * LIMIT) in str(body["detail"])
        assert_problem(await c.post("/items", content=b"x" * (3 * LIMIT)), 413, "body-too-large")
