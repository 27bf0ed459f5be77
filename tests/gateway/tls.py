"""A real mutual-TLS setup for the gateway's tests: a CA, a server certificate and client
certificates made at test time, and a small TLS-terminating proxy that does what the ingress
(ingress-nginx with auth-tls-pass-certificate-to-upstream) does: ask for a client certificate,
verify it against the CA, and forward it URL-encoded in ``ssl-client-cert``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path
    der: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Pair(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    clients: tuple[Pair, Pair]
    stranger: Pair  # signed by another CA: the proxy refuses its handshake


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1, two client certificates of that CA, and one of another CA."""
    now = dt.datetime.now(dt.UTC)

    def issue(
        subject: str,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool,
        usage: list[x509.ObjectIdentifier],
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(issuer if not ca else _name(subject))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        if usage == [ExtendedKeyUsageOID.SERVER_AUTH]:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(signer if not ca else key, hashes.SHA256()), key

    ca_cert, ca_key = issue(
        "Tongban test CA", _name("Tongban test CA"), ec.generate_private_key(ec.SECP256R1()), ca=True, usage=[]
    )
    other_cert, other_key = issue(
        "Other CA", _name("Other CA"), ec.generate_private_key(ec.SECP256R1()), ca=True, usage=[]
    )
    server = issue("127.0.0.1", ca_cert.subject, ca_key, ca=False, usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    client = [ExtendedKeyUsageOID.CLIENT_AUTH]
    first = issue("低保审核系统", ca_cert.subject, ca_key, ca=False, usage=client)
    second = issue("公积金业务系统", ca_cert.subject, ca_key, ca=False, usage=client)
    stranger = issue("stranger", other_cert.subject, other_key, ca=False, usage=client)
    return Pki(
        ca=_write(directory, "ca", ca_cert, ca_key),
        server=_write(directory, "server", *server),
        clients=(_write(directory, "client-a", *first), _write(directory, "client-b", *second)),
        stranger=_write(directory, "stranger", *stranger),
    )


def client_context(pki: Pki, pair: Pair | None) -> ssl.SSLContext:
    """What a departmental system uses: trusts the CA, presents ``pair`` (None: no certificate)."""
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if pair is not None:
        context.load_cert_chain(str(pair.cert), str(pair.key))
    return context


@dataclass
class TlsProxy:
    """The ingress: TLS with an optional, CA-verified client certificate; each request goes on to
    ``upstream`` (the gateway) with ``ssl-client-cert``/``ssl-client-verify``/``X-Forwarded-For``
    set by the proxy itself (a client's own copies are replaced, as nginx's proxy_set_header does)."""

    upstream: httpx.AsyncClient
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = [tuple(line.split(":", 1)) for line in lines if ":" in line]
            own = {"ssl-client-cert", "ssl-client-verify", "x-forwarded-for", "host", "connection"}
            forwarded = [(k.strip(), v.strip()) for k, v in headers if k.strip().lower() not in own]
            length = int(next((v for k, v in forwarded if k.lower() == "content-length"), "0"))
            body = await reader.readexactly(length) if length else b""
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            if der:
                pem = ssl.DER_cert_to_PEM_cert(der)
                forwarded += [("ssl-client-cert", quote(pem, safe="")), ("ssl-client-verify", "SUCCESS")]
            else:
                forwarded += [("ssl-client-cert", ""), ("ssl-client-verify", "NONE")]
            forwarded.append(("x-forwarded-for", writer.get_extra_info("peername")[0]))
            answer = await self.upstream.request(method, target, headers=forwarded, content=body)
            out = [f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}"]
            skip = {"content-length", "connection", "transfer-encoding", "content-encoding"}
            out += [f"{k}: {v}" for k, v in answer.headers.items() if k.lower() not in skip]
            out += [f"content-length: {len(answer.content)}", "connection: close", "", ""]
            writer.write("\r\n".join(out).encode("latin-1") + answer.content)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def tls_proxy(pki: Pki, upstream: httpx.AsyncClient) -> AsyncIterator[TlsProxy]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca.cert))
    context.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    context.verify_mode = ssl.CERT_OPTIONAL  # as the ingress's auth-tls-verify-client: optional
    proxy = TlsProxy(upstream)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, ssl=context)
    proxy.url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()
        await server.wait_closed()
