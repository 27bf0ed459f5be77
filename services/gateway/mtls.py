"""Certificate-bound access tokens (RFC 8705 §3 — 证书绑定令牌) behind a TLS-terminating proxy.

TLS ends at the ingress (ingress-nginx), which verifies the client certificate and forwards it to
the gateway in the ``ssl-client-cert`` header, URL-encoded PEM (nginx ``$ssl_client_escaped_cert``;
annotation ``auth-tls-pass-certificate-to-upstream``). The gateway believes that header, and the
ingress's ``X-Forwarded-For``, only when the peer of its connection is one of the configured proxy
networks (``TONGBAN_GATEWAY_TRUSTED_PROXIES``, none by default): from anyone else they are ignored.

A token issued to a certificate-bound system carries ``cnf: {"x5t#S256": <thumbprint>}``: the
base64url SHA-256 of the DER certificate used at the token endpoint. The gateway compares it with
the certificate of every proxied request, and tells the services the thumbprint it checked in
:data:`services.common.security.CLIENT_CERT_THUMBPRINT_HEADER`, a header only it sets.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Sequence
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.security import CLIENT_CERT_THUMBPRINT_HEADER

# What ingress-nginx sends (auth-tls-pass-certificate-to-upstream), and its verdict on the chain.
CLIENT_CERT_HEADER = "ssl-client-cert"
CLIENT_VERIFY_HEADER = "ssl-client-verify"
# A PEM certificate of a sane chain depth is a few kB; anything far larger is not one.
MAX_CERT_HEADER_BYTES = 16 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_networks(value: str) -> tuple[Network, ...]:
    """The trusted proxy networks of a comma-separated CIDR list ("" → none). Raises ValueError."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())


def is_trusted(address: str | None, networks: Sequence[Network]) -> bool:
    if address is None or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def peer_of(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def client_address(request: Request, networks: Sequence[Network]) -> str:
    """The client's address: the peer of the connection, unless that peer is a trusted proxy —
    then the nearest ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further
    left were written by the client and prove nothing)."""
    peer = peer_of(request) or "unknown"
    if not is_trusted(peer, networks):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage where an address should be: fall back to what we saw
    return peer


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url (unpadded) SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def forwarded_thumbprint(peer: str | None, headers: Headers, networks: Sequence[Network]) -> str | None:
    """The thumbprint of the client certificate the trusted proxy forwarded, or None: no trusted
    proxy, no certificate, a chain the proxy did not verify, or a header that is not a certificate."""
    if not is_trusted(peer, networks):
        return None
    raw = headers.get(CLIENT_CERT_HEADER, "")
    if not raw or len(raw) > MAX_CERT_HEADER_BYTES:
        return None
    verdict = headers.get(CLIENT_VERIFY_HEADER)
    if verdict is not None and verdict != "SUCCESS":
        return None
    try:
        certificate = x509.load_pem_x509_certificate(unquote(raw).encode())
    except ValueError:
        return None
    return thumbprint(certificate.public_bytes(Encoding.DER))


# Headers about the client certificate that reach the routes only as the gateway's own verdict.
CERT_HEADERS = frozenset(
    {CLIENT_CERT_HEADER.encode(), CLIENT_VERIFY_HEADER.encode(), CLIENT_CERT_THUMBPRINT_HEADER.encode()}
)


class ClientCertificates:
    """ASGI middleware: replaces whatever a request says about a client certificate by the
    thumbprint the gateway checked itself (:data:`CLIENT_CERT_THUMBPRINT_HEADER`, set only when a
    trusted proxy forwarded a certificate), so that every route and the proxy read one header and a
    client can never set it."""

    def __init__(self, app: ASGIApp, networks: Sequence[Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw: list[tuple[bytes, bytes]] = scope["headers"]
            client = scope.get("client")
            found = forwarded_thumbprint(client[0] if client else None, Headers(scope=scope), self.networks)
            headers = [(k, v) for k, v in raw if k.lower() not in CERT_HEADERS]
            if found is not None:
                headers.append((CLIENT_CERT_THUMBPRINT_HEADER.encode(), found.encode()))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
