"""A consumer's callback server for tests: real TLS with a certificate of a CA made at test time
(tests/gateway/tls.py), refusing the first POSTs; and a consumer's check of the signature."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.gateway.tls import Pki


@dataclass
class Hook:
    """A consumer's callback server over real TLS: refuses the first ``refuse`` POSTs with 503."""

    refuse: int
    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append((headers, body))
            status = "503 Service Unavailable" if len(self.received) <= self.refuse else "204 No Content"
            writer.write(f"HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def hook_server(pki: Pki, refuse: int) -> AsyncIterator[Hook]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    hook = Hook(refuse)
    server = await asyncio.start_server(hook.handle, "127.0.0.1", 0, ssl=context)
    hook.url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/tongban/callback"
    try:
        yield hook
    finally:
        server.close()
        await server.wait_closed()


def verify_detached(jwks: dict[str, Any], signature: str, body: bytes) -> dict[str, Any]:
    """Verify a detached-content JWS as a consumer would, with nothing but ``cryptography``:
    the signing input is ``<protected>.<base64url(body)>`` (RFC 7515 appendix F)."""

    def b64(data: str) -> bytes:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))

    protected, payload, sig = signature.split(".")
    assert payload == "", "the content is detached"
    header: dict[str, Any] = orjson.loads(b64(protected))
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    signing_input = f"{protected}.{base64.urlsafe_b64encode(body).rstrip(b'=').decode()}".encode()
    Ed25519PublicKey.from_public_bytes(b64(jwk["x"])).verify(b64(sig), signing_input)  # raises if forged
    return header
