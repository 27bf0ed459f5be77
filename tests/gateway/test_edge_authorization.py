"""Authorization at the edge (issue 9 §5): every endpoint of the platform has a row in
``authorization.EDGE_RULES``, and the gateway refuses, before anything else happens, every caller
the row does not admit — for its own routes and for those it proxies. Through a real gateway app
on PostgreSQL; the services behind it are not running, so a request the edge lets through ends in
``502`` and one it stops is a ``403`` (``404`` where the endpoint names an object)."""

from __future__ import annotations

import asyncpg
import pytest

from services.audit.app import create_app as audit_app
from services.common.security import Principal
from services.exchange.app import create_app as exchange_app
from services.gateway.authorization import EDGE_RULES, PUBLIC
from services.registry.app import create_app as registry_app
from tests.factories import UserCreateFactory
from tests.gateway.support import Replicas, admin_token, new_system, source, system_token

# The operational endpoints every service has (create_service_app), outside the API.
OPERATIONS = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
TABLES = ("departments", "systems", "users", "client_secrets", "rate_limits", "sign_in_failures")
EDGE_DETAIL = "边界授权"


def endpoints(spec: dict[str, object]) -> set[tuple[str, str]]:
    paths: dict[str, dict[str, object]] = spec["paths"]  # type: ignore[assignment]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops} - OPERATIONS


def test_every_endpoint_of_the_gateway_and_of_the_services_behind_it_has_exactly_one_rule(
    replicas: Replicas,
) -> None:
    platform = endpoints(replicas.apps[0].openapi())
    # Not the console: its pages are forwarded whole, and the API calls they make are checked.
    for app in (registry_app(), exchange_app(), audit_app()):
        platform |= endpoints(app.openapi())
    assert platform - set(EDGE_RULES) == set(), "endpoints without an edge rule"
    assert set(EDGE_RULES) - platform == set(), "rules of endpoints that do not exist"


def concrete(template: str) -> str:
    """A path of ``template`` (parameters filled in; the edge decides before anything is looked up)."""
    return template.replace("{", "").replace("}", "-x")


async def counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM gateway.{t}") for t in TABLES}  # noqa: S608 (constants)
    finally:
        await conn.close()


@pytest.mark.parametrize("caller", ["consumer system", "auditor"])
async def test_each_endpoint_refuses_at_the_edge_whoever_its_rule_does_not_admit_and_writes_nothing(
    replicas: Replicas, caller: str
) -> None:
    client, _ = replicas.clients(source())
    admin = await admin_token(client)
    if caller == "consumer system":
        headers = await system_token(client, *await new_system(client, admin))
    else:
        user = UserCreateFactory.build(department=replicas.settings.platform_dept_code, roles=["auditor"])
        created = await client.post("/v1/users", json=user.model_dump(mode="json"), headers=admin)
        assert created.status_code == 201, created.text
        login = await client.post("/v1/auth/login", json={"username": user.username, "password": user.password})
        headers = {"authorization": f"Bearer {login.json()['access_token']}"}
    principal: Principal = await replicas.apps[0].state.runtime.verifier.verify(headers["authorization"][7:])
    before = await counts(replicas.dsn)

    refused, passed = 0, 0
    for (method, template), rule in EDGE_RULES.items():
        if rule is PUBLIC:
            continue
        answer = await client.request(method, concrete(template), json={}, headers=headers)
        where = f"{method} {template} as {caller}: {answer.status_code} {answer.text[:200]}"
        if any(grant.admits(principal) for grant in rule.grants):
            passed += 1
            assert not (answer.status_code == 403 and EDGE_DETAIL in answer.text), where
            if template.startswith(("/v1/registry/", "/v1/exchange/", "/v1/audit/")):
                assert answer.status_code == 502, where  # through the edge, to a service that is down
        elif rule.hidden is not None:
            refused += 1
            assert answer.status_code == 404 and answer.json()["type"].endswith("/not-found"), where
        else:
            refused += 1
            assert answer.status_code == 403 and EDGE_DETAIL in answer.json()["detail"], where
    assert refused >= 20 and passed >= 5
    assert await counts(replicas.dsn) == before


async def test_a_proxied_path_the_table_does_not_know_goes_to_the_service_which_answers_for_it(
    replicas: Replicas,
) -> None:
    client, _ = replicas.clients(source())
    admin = await admin_token(client)
    headers = await system_token(client, *await new_system(client, admin))
    # Not an endpoint: the edge has no rule, and the registry (down here) would say 404.
    assert (await client.get("/v1/registry/no-such-thing", headers=headers)).status_code == 502
    # Without a token, nothing passes.
    answer = await client.get("/v1/audit/events")
    assert answer.status_code == 401, answer.text
    assert (await client.post("/v1/departments", json={})).status_code == 401
