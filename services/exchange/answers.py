"""Verifiable answers (可验证应答): the provider's SD-JWT (RFC 9901), checked here, passed on with
only the disclosures of granted, unmasked items.

Provider keys (提供方公钥): a providing department's connector signs answers with a key that the
department's provider system registered at the gateway (``PUT /v1/systems/{id}/answer-keys``). The
exchange takes a provider's keys from the gateway's registry (``GET
/v1/departments/{dept}/answer-keys`` at ``TONGBAN_GATEWAY_URL``) — never from the answer, nor from
the connector, which could otherwise vouch for itself — and serves them to consumers at
``GET /v1/exchange/providers/{dept}/jwks``, so a consumer can check an answer without reaching the
provider's network.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.common import sdjwt
from services.common.bus import QuotableError
from services.common.contracts.audit import AuditContext
from services.common.masking import apply_masking
from services.common.pb import exchange_pb2
from services.exchange.config import ExchangeSettings

log = logging.getLogger("tongban.exchange.answers")

REFETCH_AFTER_S = 1.0  # an unknown kid refetches a provider's JWKS at most this often


@dataclass(frozen=True, slots=True)
class Answer:
    """What the consumer gets of a verified reply: the items (masked ones in masked form), the
    names masked, the SD-JWT with the disclosures of the unmasked items only, and their names."""

    data: dict[str, str]
    masked: list[str]
    sd_jwt: str
    disclosed: list[str]


def verified_answer(
    reply: exchange_pb2.ExchangeReply,
    provider: str,
    resource: str,
    fields: list[str],
    masking: Mapping[str, str],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    request_hash: str | None = None,
) -> Answer:
    """Verify ``reply``'s SD-JWT with the keys of the ``provider`` the query was sent to and check
    that it answers this query; take the ``fields`` asked, mask them. A masked item is shown masked
    (unsigned, for display) and its disclosure is dropped: the signed clear value never leaves.
    ``request_hash``: SHA-256 of the request as the exchange sent it (kept with the query, so any
    replica knows it; unknown only for queries written before it was kept): the answer must be to
    that very request."""
    verified = sdjwt.verify(reply.sd_jwt, keys)
    signed = verified.payload
    bound = {
        "query_id": reply.query_id,
        "request_hash": request_hash or reply.request_hash,
        "provider": provider,
        "resource": resource,
    }
    wrong = [name for name, value in bound.items() if signed.get(name) != value]
    if wrong:
        raise sdjwt.InvalidSdJwt(f"the signed answer is for another {', '.join(wrong)}")
    asked = {name: verified.items[name] for name in fields if name in verified.items}
    if any(not isinstance(v, str) for v in asked.values()):
        raise sdjwt.InvalidSdJwt("an item's value is not a string")
    data, masked = apply_masking(asked, dict(masking))
    disclosed = [name for name in asked if name not in masked]
    return Answer(data, masked, verified.present(disclosed), disclosed)


def answer_body(answer: Answer) -> dict[str, Any]:
    """The answer's part of the response body (``data``/``masked`` as before, plus ``sd_jwt``)."""
    return {
        "data": answer.data,
        "masked": answer.masked,
        "sd_jwt": answer.sd_jwt,
        "sd_jwt_sha256": sdjwt.sd_hash(answer.sd_jwt),
        "disclosed": answer.disclosed,
    }


def audited(ctx: AuditContext, body: Mapping[str, Any]) -> AuditContext:
    """The audit context of an answer: with the hash of the SD-JWT passed on and the items whose
    disclosures it carried (an error or a refusal has neither)."""
    if not isinstance(body.get("sd_jwt_sha256"), str):
        return ctx
    return ctx.with_(answer_sha256=body["sd_jwt_sha256"], disclosed_fields=tuple(body.get("disclosed", ())))


class ProviderKeysUnavailable(QuotableError):
    """The key an answer names is not known, and the provider's JWKS could not be fetched: the
    answer can be neither verified nor refused now. Transient: whoever holds the reply keeps it
    and tries again (the late-reply consumer's bus retries, then dead-letters it with this reason:
    a provider's code, a URL and a key id, quotable in the withheld dead letter)."""


class ProviderKeys:
    """The providers' answer-signing public keys, as registered at the gateway by each providing
    department's provider systems (the gateway answers 404 for a department it does not know: no
    keys). Reused for ``TONGBAN_EXCHANGE_PROVIDER_KEYS_CACHE_S``; a key added later is fetched on
    its kid, and one withdrawn at the gateway stops verifying once the cache is stale.
    ``pinned``: JWKS given directly (credit code → JWKS), never fetched."""

    def __init__(
        self,
        settings: ExchangeSettings,
        client: httpx.AsyncClient | None,
        pinned: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self._jwks: dict[str, tuple[float, dict[str, Any]]] = {
            dept: (float("inf"), dict(jwks)) for dept, jwks in (pinned or {}).items()
        }
        self._tried: dict[str, float] = {}
        self._unreachable: set[str] = set()  # providers whose last JWKS fetch failed
        self._locks: dict[str, asyncio.Lock] = {}

    def url(self, dept: str) -> str:
        return f"{self.settings.gateway_url.rstrip('/')}/v1/departments/{dept}/answer-keys"

    async def jwks(self, dept: str, kid: str | None = None) -> dict[str, Any]:
        """``dept``'s JWKS: cached, fetched again when stale or when ``kid`` is not in it (at most
        every ``REFETCH_AFTER_S``). Concurrent callers wait for one fetch (the first answers after
        a start arrive together). A fetch that fails keeps what was known (maybe nothing)."""
        known = self._usable(dept, kid)
        if known is not None:
            return known
        async with self._locks.setdefault(dept, asyncio.Lock()):
            known = self._usable(dept, kid)  # fetched while this caller waited
            if known is not None:
                return known
            return await self._fetch(dept)

    def _usable(self, dept: str, kid: str | None) -> dict[str, Any] | None:
        """The cached JWKS when no fetch is due (fresh and knowing ``kid``, or fetched just now)."""
        fetched_at, jwks = self._jwks.get(dept, (0.0, {"keys": []}))
        now = time.monotonic()
        fresh = fetched_at == float("inf") or now - fetched_at < self.settings.provider_keys_cache_s
        if self.client is None or (fresh and (kid is None or kid in {k.get("kid") for k in jwks.get("keys", [])})):
            return jwks
        if now - self._tried.get(dept, -REFETCH_AFTER_S) < REFETCH_AFTER_S:
            return jwks
        return None

    async def _fetch(self, dept: str) -> dict[str, Any]:
        assert self.client is not None
        jwks = self._jwks.get(dept, (0.0, {"keys": []}))[1]
        try:
            response = await self.client.get(self.url(dept), timeout=2.0)
            # A department the gateway does not know has no keys: an authoritative answer, cached.
            body = {"keys": []} if response.status_code == 404 else response.raise_for_status().json()
            if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
                raise ValueError("not a JWKS")
        except (httpx.HTTPError, ValueError):
            log.warning("provider keys not fetched", extra={"ctx_provider": dept}, exc_info=True)
            self._unreachable.add(dept)
            return jwks
        finally:
            self._tried[dept] = time.monotonic()  # after the fetch: callers meanwhile waited for it
        self._unreachable.discard(dept)
        self._jwks[dept] = (time.monotonic(), body)
        return body

    async def keys(self, dept: str, sd_jwt: str) -> dict[str, Ed25519PublicKey]:
        """The public keys of ``dept`` by kid, fetched if the SD-JWT names a kid not known yet.
        Raises :class:`ProviderKeysUnavailable` when that kid is still unknown because the JWKS
        could not be fetched (an answer signed with a key not registered for the provider is no such
        case: it fails verification)."""
        try:
            kid: str | None = str(sdjwt.unverified_header(sd_jwt.split("~", 1)[0]).get("kid", ""))
        except sdjwt.InvalidSdJwt:
            kid = None
        keys = keys_by_kid(await self.jwks(dept, kid))
        if kid and kid not in keys and dept in self._unreachable:
            raise ProviderKeysUnavailable(
                f"the answer-signing keys of provider {dept} could not be fetched from {self.url(dept)} "
                f"(the answer names key {kid!r}, not known yet)"
            )
        return keys


def keys_by_kid(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS by kid (other key types are skipped)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
            try:
                keys[jwk["kid"]] = sdjwt.public_key(jwk)
            except sdjwt.InvalidSdJwt:
                continue
    return keys
