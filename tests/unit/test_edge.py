"""The edge every service shares: bounded request ids, W3C trace context, text-only paths and
query strings, security headers, no-store on token routes; and the gateway's proxy target check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.responses import Response

from services.common.errors import CommonProblem, Problem
from services.common.http import NoStoreRoute, create_service_app
from services.common.logs import REQUEST_ID_PATTERN, request_id_var, trace_var
from services.gateway.api import forwarded_target

LIMIT = 1024
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


@asynccontextmanager
async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def build_app() -> FastAPI:
    app = create_service_app(service="t", title="t", version="0", lifespan=no_lifespan, max_body_bytes=LIMIT)

    @app.get("/v1/things/{key}")
    async def thing(key: str, q: str | None = None) -> dict[str, object]:
        trace = trace_var.get()
        assert trace is not None
        return {"key": key, "q": q, "request_id": request_id_var.get(), "traceparent": trace.traceparent}

    @app.get("/framed")
    async def framed() -> Response:
        return Response("x", headers={"X-Frame-Options": "SAMEORIGIN"})

    tokens = APIRouter(route_class=NoStoreRoute)

    @tokens.post("/token")
    async def token(fail: bool = False) -> dict[str, str]:
        if fail:
            raise CommonProblem.UNAUTHORIZED.problem("no")
        return {"access_token": "t"}

    outer = APIRouter()
    outer.include_router(tokens)
    app.include_router(outer)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_422(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/validation")
    assert body["request_id"] == response.headers["x-request-id"]


# --------------------------------------------------------------------------- request id


@pytest.mark.parametrize("rid", ["a", "abc-123", "A.b_c-9", "x" * 64])
async def test_acceptable_request_id_is_kept(client: httpx.AsyncClient, rid: str) -> None:
    response = await client.get("/v1/things/k", headers={"x-request-id": rid})
    assert response.headers["x-request-id"] == rid
    assert response.json()["request_id"] == rid


@pytest.mark.parametrize(
    "rid", ["x" * 65, "x" * 200, "a b", "a/b", "ünï".encode(), b"\xff\x00", "a;b", "", "'; DROP TABLE"]
)
async def test_unacceptable_request_id_is_replaced(client: httpx.AsyncClient, rid: str | bytes) -> None:
    response = await client.get("/v1/things/k", headers={"x-request-id": rid})
    assert response.status_code == 200
    replaced = response.headers["x-request-id"]
    assert replaced != rid
    assert REQUEST_ID_PATTERN.fullmatch(replaced)
    assert response.json()["request_id"] == replaced  # what the app (and so audit) sees


async def test_replaced_request_id_is_the_one_an_error_carries(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/things/%00", headers={"x-request-id": "y" * 100})
    assert_422(response)
    assert len(response.headers["x-request-id"]) <= 64


async def test_repeated_request_id_header_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/things/k", headers=[("x-request-id", "one"), ("x-request-id", "two")])
    assert response.headers["x-request-id"] not in ("one", "two")


# --------------------------------------------------------------------------- trace context


def traceparent_of(response: httpx.Response) -> tuple[str, str, str, str]:
    version, trace_id, span_id, flags = response.json()["traceparent"].split("-")
    return version, trace_id, span_id, flags


async def test_valid_traceparent_is_continued_with_a_new_span(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/things/k", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    version, trace_id, span_id, flags = traceparent_of(response)
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span_id != PARENT_ID and len(span_id) == 16 and span_id != "0" * 16


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # forbidden version
        f"01-{TRACE_ID}-{PARENT_ID}-01",  # only version 00 is understood
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # hex must be lowercase
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # short trace id
        f"00-{TRACE_ID}-{PARENT_ID}-1",  # short flags
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
        f"00-{TRACE_ID}x-{PARENT_ID}-01",
        "00-" + "g" * 32 + f"-{PARENT_ID}-01",
        "x" * 500,
        "",
    ],
)
async def test_invalid_traceparent_is_dropped_for_a_new_trace(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/v1/things/k", headers={"traceparent": value})
    assert response.status_code == 200
    version, trace_id, span_id, _ = traceparent_of(response)
    assert version == "00"
    assert trace_id != TRACE_ID.lower() and len(trace_id) == 32 and trace_id != "0" * 32
    assert len(span_id) == 16


async def test_repeated_traceparent_is_dropped(client: httpx.AsyncClient) -> None:
    valid = f"00-{TRACE_ID}-{PARENT_ID}-01"
    response = await client.get("/v1/things/k", headers=[("traceparent", valid), ("traceparent", valid)])
    assert traceparent_of(response)[1] != TRACE_ID


async def test_no_traceparent_starts_a_trace_per_request(client: httpx.AsyncClient) -> None:
    first = traceparent_of(await client.get("/v1/things/k"))
    second = traceparent_of(await client.get("/v1/things/k"))
    assert first[1] != second[1]


# --------------------------------------------------------------------------- path and query text


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/things/%00",
        b"/v1/things/a%00b",
        b"/v1/things/%ff",  # not UTF-8
        b"/v1/things/%c0%80",  # overlong NUL
        b"/v1/things/%ed%a0%80",  # a lone surrogate (U+D800) in UTF-8 form
        b"/v1/things/k?q=%00",
        b"/v1/things/k?q=a%00",
        b"/v1/things/k?%00=x",
        b"/v1/things/k?q=%ff%fe",
        b"/v1/things/k?q=%ed%b0%80",
    ],
)
async def test_nul_or_broken_text_in_path_or_query_is_422(client: httpx.AsyncClient, target: bytes) -> None:
    response = await client.get(target.decode())  # httpx keeps escapes as they are
    assert_422(response)
    assert "x-content-type-options" in response.headers


async def test_raw_invalid_utf8_bytes_are_422() -> None:
    # httpx always percent-encodes, so drive the ASGI app with raw bytes as a server would pass them.
    app = build_app()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    for raw_path, query in ((b"/v1/things/\xff", b""), (b"/v1/things/k", b"q=\xc3")):
        sent.clear()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": raw_path.decode("latin-1"),
            "raw_path": raw_path,
            "query_string": query,
            "headers": [],
            "server": ("test", 80),
        }
        await app(scope, receive, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 422


async def test_text_that_is_fine_passes(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/things/%E4%B8%AD%E6%96%87", params={"q": "户籍 地址+1 ✓"})
    assert response.status_code == 200, response.text
    assert response.json() == {**response.json(), "key": "中文", "q": "户籍 地址+1 ✓"}


# --------------------------------------------------------------------------- response headers


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", "/v1/things/k", 200),
        ("GET", "/nowhere", 404),
        ("GET", "/v1/things/%00", 422),
        ("GET", "/healthz", 200),
        ("POST", "/token", 200),
    ],
)
async def test_security_headers_on_every_response(
    client: httpx.AsyncClient, method: str, target: str, status: int
) -> None:
    response = await client.request(method, target)
    assert response.status_code == status
    for name, value in SECURITY.items():
        assert response.headers.get_list(name) == [value], name
    assert "strict-transport-security" not in response.headers  # plain HTTP


async def test_security_headers_on_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/token", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.headers["x-frame-options"] == "DENY"


async def test_hsts_only_over_tls() -> None:
    transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as tls:
        response = await tls.get("/v1/things/k")
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        refused = await tls.get("/v1/things/%00")
        assert refused.headers["strict-transport-security"] == "max-age=31536000"


async def test_app_headers_are_replaced_not_duplicated(client: httpx.AsyncClient) -> None:
    response = await client.get("/framed")
    assert response.headers.get_list("x-frame-options") == ["DENY"]


async def test_token_route_answers_are_never_cached(client: httpx.AsyncClient) -> None:
    ok = await client.post("/token")
    failed = await client.post("/token", params={"fail": "true"})
    invalid = await client.post("/token", params={"fail": "maybe"})
    assert (ok.status_code, failed.status_code, invalid.status_code) == (200, 401, 422)
    for response in (ok, failed, invalid):
        assert response.headers.get_list("cache-control") == ["no-store"]
        assert response.headers["pragma"] == "no-cache"
    other = await client.get("/v1/things/k")
    assert "cache-control" not in other.headers and "pragma" not in other.headers


# --------------------------------------------------------------------------- gateway proxy target


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/v1/exchange/%2e%2e/%2e%2e/openapi.json",
        b"/v1/exchange/%2E%2E/openapi.json",
        b"/v1/exchange/%2e%2E/openapi.json",
        b"/v1/exchange/.%2e/openapi.json",
        b"/v1/exchange/%2e./openapi.json",
        b"/v1/exchange/../openapi.json",
        b"/v1/exchange/./queries",
        b"/v1/exchange/%2e/queries",
        b"/v1/exchange/queries/..",
        b"/v1/exchange/queries/%2e",
        b"/v1/exchange/a%2fb",
        b"/v1/exchange/a%2Fb",
        b"/v1/exchange/a%5cb",
        b"/v1/exchange/a%5C..%5Cb",
        b"/v1/exchange/a\\b",
        b"/v1/exchange/a%zz",
        b"/v1/exchange/a%4",
        b"/v1/%65xchange/queries",  # the route matched the decoded path, not this prefix
        b"/v1/registry/queries",
    ],
)
def test_proxy_refuses_paths_that_could_land_elsewhere(raw_path: bytes) -> None:
    with pytest.raises(Problem) as refused:
        forwarded_target(raw_path, b"", "/v1/exchange/")
    assert refused.value.status == 400
    assert refused.value.code == CommonProblem.INVALID_PATH


@pytest.mark.parametrize(
    ("raw_path", "query", "target"),
    [
        (b"/v1/exchange/queries", b"", "/v1/exchange/queries"),
        (b"/v1/exchange/queries/abc", b"limit=5&cursor=x%2Fy", "/v1/exchange/queries/abc?limit=5&cursor=x%2Fy"),
        (b"/v1/exchange/a..b/.c/d.", b"", "/v1/exchange/a..b/.c/d."),  # dots inside names are fine
        (b"/v1/exchange/%E4%B8%AD", b"q=%E4%B8%AD", "/v1/exchange/%E4%B8%AD?q=%E4%B8%AD"),
        ("/v1/exchange/中".encode(), "q=中 文".encode(), "/v1/exchange/%E4%B8%AD?q=%E4%B8%AD%20%E6%96%87"),
    ],
)
def test_proxy_sends_the_checked_path_as_it_came(raw_path: bytes, query: bytes, target: str) -> None:
    assert forwarded_target(raw_path, query, "/v1/exchange/") == target
