"""Certificate-bound access tokens (RFC 8705, issue 9 §3) over a real mutual-TLS handshake.

A CA, a server certificate and client certificates are made at test time (tests/gateway/tls.py);
a TLS-terminating proxy in front of the gateway does what the ingress does (verify the client
certificate, forward it in ``ssl-client-cert``). Behind the gateway, a service checks the token
with the shared verifier (services/common/runtime.py), served by uvicorn on a port of its own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from joserfc.jwk import KeySet
from starlette.requests import Request as StarletteRequest

from services.common.errors import install_error_handlers
from services.common.runtime import CurrentPrincipal
from services.common.security import CLIENT_CERT_THUMBPRINT_HEADER, TokenVerifier
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.mtls import client_address, proxy_networks
from tests.factories import DepartmentCreateFactory, SystemCreateFactory
from tests.gateway.support import GRANT, KEK, PASSWORD
from tests.gateway.tls import Pki, TlsProxy, client_context, make_pki, tls_proxy
from tests.stack import asyncpg_dsn, create_database, drop_database, free_port, infra_env

PROXY_PEER = "127.0.0.1"  # where the TLS proxy connects from: the one trusted proxy
STRANGER_PEER = "203.0.113.7"  # anyone else who can reach the gateway


def x5t_s256(der: bytes) -> str:
    """RFC 8705 §3.1, computed here independently of the gateway's code."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def service_app(settings: GatewaySettings) -> FastAPI:
    """A service behind the gateway: checks tokens with the shared verifier, says what it saw."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/registry/whoami")
    async def whoami(principal: CurrentPrincipal, request: Request) -> dict[str, str | None]:
        return {
            "sub": principal.sub,
            "thumbprint": request.headers.get(CLIENT_CERT_THUMBPRINT_HEADER),
            "forwarded_for": request.headers.get("x-forwarded-for"),
        }

    app.state.runtime = SimpleNamespace(verifier=TokenVerifier(settings.jwt_issuer, settings.jwt_audience))
    return app


@dataclass
class Setup:
    pki: Pki
    proxy: TlsProxy
    gateway: FastAPI
    service_url: str
    dsn: str

    def client(self, pair_index: int | None, *, stranger: bool = False) -> httpx.AsyncClient:
        """A system's client through the TLS proxy, presenting client certificate ``pair_index``."""
        pair = self.pki.stranger if stranger else (None if pair_index is None else self.pki.clients[pair_index])
        return httpx.AsyncClient(base_url=self.proxy.url, verify=client_context(self.pki, pair))

    def direct(self, peer: str) -> httpx.AsyncClient:
        """Straight to the gateway, as ``peer``: no TLS proxy in between."""
        transport = httpx.ASGITransport(app=self.gateway, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://gw")

    async def count_systems(self) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM gateway.systems"))
        finally:
            await conn.close()


@pytest.fixture(scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    pki = make_pki(Path(tmp_path_factory.mktemp("pki")))
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    port = free_port()
    settings = GatewaySettings(
        database_url=url,
        bus="memory",
        bootstrap_admin_password=PASSWORD,
        key_encryption_key=KEK,
        registry_url=f"http://127.0.0.1:{port}",
        trusted_proxies=f"{PROXY_PEER}/32",
    )
    gateway = create_app(settings)
    service = service_app(settings)
    server = uvicorn.Server(uvicorn.Config(service, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    try:
        async with gateway.router.lifespan_context(gateway):
            service.state.runtime.verifier.use_keys(KeySet.import_key_set(gateway.state.key_ring.jwks()))
            serving = asyncio.create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 - uvicorn.Server offers a flag, not an event
                await asyncio.sleep(0.01)
            upstream = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=gateway, client=(PROXY_PEER, 40000)), base_url="http://gw"
            )
            async with upstream, tls_proxy(pki, upstream) as proxy:
                yield Setup(pki, proxy, gateway, f"http://127.0.0.1:{port}", asyncpg_dsn(url)[0])
            server.should_exit = True
            await serving
    finally:
        await drop_database(url)


async def register(setup: Setup, *, bound: bool) -> tuple[str, str]:
    async with setup.client(None) as client:
        login = await client.post("/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        assert login.status_code == 200, login.text
        admin = {"authorization": f"Bearer {login.json()['access_token']}"}
        department = await client.post(
            "/v1/departments", json=DepartmentCreateFactory.build().model_dump(mode="json"), headers=admin
        )
        assert department.status_code == 201, department.text
        body = SystemCreateFactory.build(tls_client_certificate_bound_access_tokens=bound).model_dump(mode="json")
        created = await client.post(f"/v1/departments/{department.json()['code']}/systems", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["tls_client_certificate_bound_access_tokens"] is bound
    return created.json()["client_id"], created.json()["client_secret"]


async def test_metadata_advertises_certificate_bound_tokens(setup: Setup) -> None:
    async with setup.client(None) as client:
        response = await client.get("/.well-known/oauth-authorization-server")
    assert response.json()["tls_client_certificate_bound_access_tokens"] is True


async def test_a_bound_token_works_only_with_its_certificate(setup: Setup) -> None:
    client_id, secret = await register(setup, bound=True)
    first, second = (x5t_s256(p.der) for p in setup.pki.clients)
    async with setup.client(0) as system:
        issued = await system.post("/oauth2/token", data=GRANT, auth=(client_id, secret))
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        assert claims_of(token)["cnf"] == {"x5t#S256": first}
        introspected = await system.post("/oauth2/introspect", data={"token": token}, auth=(client_id, secret))
        assert introspected.json()["cnf"] == {"x5t#S256": first}, introspected.text
        bearer = {"authorization": f"Bearer {token}"}
        # With its certificate, through the gateway: the service sees the thumbprint the gateway checked,
        # not the one the client tried to send along.
        ok = await system.get("/v1/registry/whoami", headers={**bearer, CLIENT_CERT_THUMBPRINT_HEADER: "forged"})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"sub": client_id, "thumbprint": first, "forwarded_for": PROXY_PEER}

    # Without a certificate (the handshake succeeds: the certificate is optional at the proxy).
    async with setup.client(None) as bare:
        missing = await bare.get("/v1/registry/whoami", headers=bearer)
    assert missing.status_code == 401, missing.text
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "bound to a client certificate" in missing.json()["detail"]

    # With another certificate of the same CA.
    async with setup.client(1) as other:
        wrong = await other.get("/v1/registry/whoami", headers=bearer)
    assert wrong.status_code == 401, wrong.text
    assert "another client certificate" in wrong.json()["detail"]
    assert second != first

    # Straight to the service, past the gateway, the service's own check refuses it too.
    async with httpx.AsyncClient(base_url=setup.service_url) as direct:
        bypass = await direct.get("/v1/registry/whoami", headers=bearer)
        forged = await direct.get("/v1/registry/whoami", headers={**bearer, CLIENT_CERT_THUMBPRINT_HEADER: second})
        honest = await direct.get("/v1/registry/whoami", headers={**bearer, CLIENT_CERT_THUMBPRINT_HEADER: first})
    assert (bypass.status_code, forged.status_code, honest.status_code) == (401, 401, 200)


async def test_a_certificate_of_another_ca_gets_no_handshake(setup: Setup) -> None:
    async with setup.client(None, stranger=True) as client:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)):
            await client.get("/.well-known/oauth-authorization-server")


async def test_a_bound_system_gets_no_token_without_a_certificate(setup: Setup) -> None:
    client_id, secret = await register(setup, bound=True)
    async with setup.client(None) as client:
        response = await client.post("/oauth2/token", data=GRANT, auth=(client_id, secret))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["error"] == "unauthorized_client"
    assert "access_token" not in response.json()


async def test_an_unbound_system_gets_unbound_tokens_even_over_mutual_tls(setup: Setup) -> None:
    client_id, secret = await register(setup, bound=False)
    async with setup.client(0) as system:
        issued = await system.post("/oauth2/token", data=GRANT, auth=(client_id, secret))
    assert issued.status_code == 200, issued.text
    assert "cnf" not in claims_of(issued.json()["access_token"])
    async with setup.client(None) as bare:
        ok = await bare.get("/v1/registry/whoami", headers={"authorization": f"Bearer {issued.json()['access_token']}"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["thumbprint"] is None


async def test_certificate_headers_from_an_untrusted_peer_are_ignored(setup: Setup) -> None:
    client_id, secret = await register(setup, bound=True)
    pem = ssl.DER_cert_to_PEM_cert(setup.pki.clients[0].der)
    forged = {
        "ssl-client-cert": quote(pem, safe=""),
        "ssl-client-verify": "SUCCESS",
        CLIENT_CERT_THUMBPRINT_HEADER: x5t_s256(setup.pki.clients[0].der),
    }
    async with setup.direct(STRANGER_PEER) as stranger:
        refused = await stranger.post("/oauth2/token", data=GRANT, auth=(client_id, secret), headers=forged)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "unauthorized_client"

    # A token obtained properly, replayed by someone who only has the token and the (public) certificate.
    async with setup.client(0) as system:
        token = (await system.post("/oauth2/token", data=GRANT, auth=(client_id, secret))).json()["access_token"]
    async with setup.direct(STRANGER_PEER) as stranger:
        replayed = await stranger.get("/v1/registry/whoami", headers={**forged, "authorization": f"Bearer {token}"})
    assert replayed.status_code == 401, replayed.text
    assert "bound to a client certificate" in replayed.json()["detail"]


async def test_the_same_headers_from_the_trusted_proxy_are_believed(setup: Setup) -> None:
    """The control of the test above: the very same forged headers work from the trusted peer, so
    what made the difference was the peer address alone."""
    client_id, secret = await register(setup, bound=True)
    pem = ssl.DER_cert_to_PEM_cert(setup.pki.clients[0].der)
    headers = {"ssl-client-cert": quote(pem, safe=""), "ssl-client-verify": "SUCCESS"}
    async with setup.direct(PROXY_PEER) as proxy:
        issued = await proxy.post("/oauth2/token", data=GRANT, auth=(client_id, secret), headers=headers)
        assert issued.status_code == 200, issued.text
        # A certificate the proxy says it could not verify is no certificate.
        unverified = await proxy.post(
            "/oauth2/token", data=GRANT, auth=(client_id, secret), headers={**headers, "ssl-client-verify": "FAILED:x"}
        )
    assert unverified.status_code == 400, unverified.text


async def test_registration_with_a_bad_binding_flag_is_refused_and_writes_nothing(setup: Setup) -> None:
    before = await setup.count_systems()
    async with setup.client(None) as client:
        login = await client.post("/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        admin = {"authorization": f"Bearer {login.json()['access_token']}"}
        department = await client.post(
            "/v1/departments", json=DepartmentCreateFactory.build().model_dump(mode="json"), headers=admin
        )
        body = SystemCreateFactory.build().model_dump(mode="json")
        body["tls_client_certificate_bound_access_tokens"] = "sometimes"
        response = await client.post(f"/v1/departments/{department.json()['code']}/systems", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await setup.count_systems() == before


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("10.1.2.3", "198.51.100.4", "198.51.100.4"),  # the ingress says who connected to it
        (
            "10.1.2.3",
            "6.6.6.6, 198.51.100.4, 10.9.9.9",
            "198.51.100.4",
        ),  # left of the first stranger: the client's own words
        ("10.1.2.3", "not-an-address", "10.1.2.3"),
        ("10.1.2.3", "", "10.1.2.3"),
        ("198.51.100.9", "6.6.6.6", "198.51.100.9"),  # an untrusted peer's X-Forwarded-For counts for nothing
    ],
)
def test_source_address_believes_only_trusted_proxies(peer: str, forwarded_for: str, expected: str) -> None:
    """The per-source rate limits (ratelimit.py) key on this address."""
    headers = [(b"x-forwarded-for", forwarded_for.encode())] if forwarded_for else []
    request = StarletteRequest({"type": "http", "headers": headers, "client": (peer, 1234)})
    assert client_address(request, proxy_networks("10.0.0.0/8")) == expected
    assert client_address(request, proxy_networks("")) == peer
