"""The bus over TLS with client certificates, against a real broker whose listener demands them (as
deploy/k8s's Strimzi listener does): ``TONGBAN_KAFKA_SECURITY_PROTOCOL=SSL`` and the CA, certificate
and key files. The broker is the local one's configuration (``deploy/local/infra.py``) with a TLS
listener; its certificates are made here, by a CA of the test's own."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from services.common.bus import KafkaBus, Message, Subscription
from services.common.runtime import make_bus
from services.common.settings import CommonSettings
from tests.integration.helpers import eventually, unique
from tests.stack import load_infra

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "var" / "kafka-tls"

pytestmark = pytest.mark.timeout(300)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None) -> tuple[x509.Certificate, Any]:
    """A certificate for ``name`` (127.0.0.1 and localhost as its addresses), signed by ``ca``, or
    the CA itself when ``ca`` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca[0].subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if ca is not None:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca[1] if ca else key, hashes.SHA256()), key


def write_certificates(folder: Path) -> None:
    """ca.crt; broker.pem (key and chain, Kafka's PEM key store); client.crt and client.key."""
    ca = issue("tongban-test-ca", None)
    broker = issue("broker", ca)
    client = issue("tongban-client", ca)
    pem = serialization.Encoding.PEM
    (folder / "ca.crt").write_bytes(ca[0].public_bytes(pem))
    (folder / "broker.pem").write_bytes(pem_key(broker[1]) + broker[0].public_bytes(pem) + ca[0].public_bytes(pem))
    (folder / "client.crt").write_bytes(client[0].public_bytes(pem))
    (folder / "client.key").write_bytes(pem_key(client[1]))


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[str, Path]]:
    """A single-node KRaft broker whose only client listener is TLS with client certificates
    required; (bootstrap, folder of the certificates)."""
    infra = load_infra()
    shutil.rmtree(HOME, ignore_errors=True)
    (HOME / "data").mkdir(parents=True)
    write_certificates(HOME)
    broker_port, controller_port = infra.free_port(), infra.free_port()
    while controller_port == broker_port:
        controller_port = infra.free_port()
    config = HOME / "server.properties"
    ports = {1: (broker_port, controller_port)}
    config.write_text(infra.kraft_properties(1, ports, HOME / "data", replication=1, tls=HOME))
    (infra.KAFKA_HOME / "log4j2.properties").write_text(infra.LOG4J2)
    infra.format_storage(config)
    log = HOME / "kafka.log"
    proc: subprocess.Popen[bytes]
    proc, offset = infra.launch_broker(config, log, HOME / "kafka.pid", heap="-Xmx256m")
    try:
        assert infra.wait_broker_ready(proc, log, offset, broker_port), f"the TLS broker did not start: {log}"
        yield f"127.0.0.1:{broker_port}", HOME
    finally:
        proc.kill()
        proc.wait(timeout=30)


def tls_settings(bootstrap: str, folder: Path, *, client_certificate: bool) -> CommonSettings:
    files = {"kafka_ssl_certfile": str(folder / "client.crt"), "kafka_ssl_keyfile": str(folder / "client.key")}
    return CommonSettings(
        kafka_bootstrap=bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(folder / "ca.crt"),
        **(files if client_certificate else {}),
    )


async def test_the_bus_publishes_and_consumes_over_tls_with_its_client_certificate(
    tls_broker: tuple[str, Path],
) -> None:
    bootstrap, folder = tls_broker
    topic = unique("tls")
    seen: list[bytes] = []

    async def collect(batch: Sequence[Message]) -> None:
        seen.extend(m.value for m in batch)

    bus = make_bus(tls_settings(bootstrap, folder, client_certificate=True), unique("client"))
    assert isinstance(bus, KafkaBus)
    bus.subscribe(Subscription([topic], collect, group=unique("g")))
    await bus.start([topic])
    try:
        await bus.publish(Message(topic, b"over tls", key=b"k"))
        await eventually(lambda: seen == [b"over tls"], 60, "the message back over TLS")
        await bus.ping()
    finally:
        await bus.stop()


async def test_without_a_client_certificate_the_broker_refuses_the_bus(tls_broker: tuple[str, Path]) -> None:
    bootstrap, folder = tls_broker
    bus = make_bus(tls_settings(bootstrap, folder, client_certificate=False), unique("client"))
    # The broker ends the handshake; the client never gets metadata, so starting fails.
    with pytest.raises(Exception) as refused:  # noqa: PT011 (aiokafka's connection error or the wait's timeout)
        await asyncio.wait_for(bus.start([unique("tls")]), 30)
    await bus.stop()
    assert type(refused.value).__name__ in {"KafkaConnectionError", "TimeoutError"}, repr(refused.value)


async def test_plain_text_is_refused_by_the_tls_listener(tls_broker: tuple[str, Path]) -> None:
    bootstrap, _ = tls_broker
    bus = make_bus(CommonSettings(kafka_bootstrap=bootstrap), unique("client"))
    with pytest.raises(Exception) as refused:  # noqa: PT011 (as above)
        await asyncio.wait_for(bus.start([unique("tls")]), 30)
    await bus.stop()
    assert type(refused.value).__name__ in {"KafkaConnectionError", "TimeoutError"}, repr(refused.value)


def test_tls_settings_must_be_complete() -> None:
    with pytest.raises(ValidationError, match="KAFKA_SSL_CAFILE"):
        CommonSettings(kafka_security_protocol="SSL")
    with pytest.raises(ValidationError, match="go together"):
        CommonSettings(kafka_security_protocol="SSL", kafka_ssl_cafile="ca.crt", kafka_ssl_certfile="client.crt")
