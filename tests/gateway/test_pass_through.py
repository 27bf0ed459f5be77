"""The proxied paths' own ASGI handler (``api.PassThrough``, before FastAPI's routing): what the
common middleware gives every route it still gives them, and what a route would refuse it refuses.
Through a real gateway app on PostgreSQL; the services behind it are not running (502)."""

from __future__ import annotations

import re

import pytest

from services.common.http import SECURITY_HEADERS
from tests.gateway.support import Replicas, admin_token, new_system, source, system_token


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE"])
async def test_a_method_the_proxy_does_not_forward_is_405_with_allow(replicas: Replicas, method: str) -> None:
    client, _ = replicas.clients(source())
    answer = await client.request(method, "/v1/registry/catalogue", headers={"x-request-id": "pass-405"})
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == "GET, POST, PUT, PATCH, DELETE"
    assert answer.headers["x-request-id"] == "pass-405"
    if method != "HEAD":
        assert answer.json()["type"].endswith("/method-not-allowed")
        assert answer.json()["request_id"] == "pass-405"


async def test_a_proxied_answer_has_the_request_id_security_headers_and_its_route_in_the_metrics(
    replicas: Replicas,
) -> None:
    client, _ = replicas.clients(source())
    admin = await admin_token(client)
    headers = await system_token(client, *await new_system(client, admin))
    answer = await client.get("/v1/exchange/requests", headers={**headers, "x-request-id": "pass-502"})
    assert answer.status_code == 502, answer.text  # through the edge, to a service that is down
    assert answer.json()["request_id"] == "pass-502"
    assert answer.headers["x-request-id"] == "pass-502"
    for name, value in SECURITY_HEADERS:
        assert answer.headers[name.decode()] == value.decode()
    # Bad input is still refused before anything else, with the route named in the metrics.
    assert (await client.get("/v1/exchange/a/%2e%2e/b", headers=headers)).status_code == 400
    metrics = (await client.get("/metrics")).text
    route = re.escape('route="/v1/exchange/{path:path}"')
    assert re.search(rf'http_requests_total\{{[^}}]*method="GET",{route},[^}}]*status="502"\}} [1-9]', metrics)
    assert re.search(rf'http_requests_total\{{[^}}]*method="GET",{route},[^}}]*status="400"\}} [1-9]', metrics)
