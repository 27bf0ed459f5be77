"""The README walkthrough, played over HTTP in both run modes."""

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import notes, service
from services.common.keywrap import KeyWrap
from services.demo import DemoCredentials
from tests.e2e.client import system_token, walkthrough
from tests.stack import DistributedStack, EmbeddedStack, Stack, asyncpg_dsn


async def audit_key_is_sealed(stack: Stack, creds: DemoCredentials) -> None:
    """The audit service, started with the stack's key-encryption key, keeps its checkpoint key
    sealed under it, and serves the verifier key of that key."""
    conn = await asyncpg.connect(asyncpg_dsn(stack.database_url)[0])
    try:
        row = await conn.fetchrow(
            "SELECT id, name, public_key, private_key, sealed_private_key FROM audit.signing_keys"
        )
    finally:
        await conn.close()
    assert row is not None and row["private_key"] is None
    seed = KeyWrap(stack.key_encryption_key).open(row["sealed_private_key"], service.sealing_context(row["id"]))
    assert notes.public_bytes(Ed25519PrivateKey.from_private_bytes(seed)) == row["public_key"]
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        served = await client.get("/v1/audit/checkpoint/key", headers=await system_token(client, creds))
    assert served.status_code == 200, served.text
    assert served.text.strip() == notes.verifier_key(row["name"], row["public_key"])


async def test_walkthrough_distributed(distributed: tuple[DistributedStack, DemoCredentials]) -> None:
    """Every service its own process, real Kafka between them."""
    await walkthrough(distributed[1])
    await audit_key_is_sealed(*distributed)


async def test_walkthrough_embedded(embedded: tuple[EmbeddedStack, DemoCredentials]) -> None:
    """One process, in-process bus, same scenario."""
    await walkthrough(embedded[1])
    await audit_key_is_sealed(*embedded)
