"""Selective Disclosure JWTs (SD-JWT, RFC 9901) for provider answers (可验证应答).

The provider's connector issues one SD-JWT per answer: every information item is a disclosure
(``base64url(JSON [salt, name, value])``) whose SHA-256 digest sits in the signed payload's
``_sd`` list; the exchange passes on only the disclosures the consumer may see. Anyone holding the
provider's public key can check, with any RFC 9901 implementation, that a disclosed value is the
one the provider signed — and nothing is learnt about the items not disclosed.

The JWS is compact EdDSA (Ed25519), written here with ``cryptography`` directly: it is the whole
of the signing input (``header.payload``) and one signature, and the answer path signs every reply.
No key binding (KB-JWT): the consumer proves what the provider said, not who holds the answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SD_ALG = "sha-256"
ALG = "EdDSA"
# Explicit typing (RFC 9901 §9.11): an answer is not mistaken for another kind of SD-JWT.
TYP = "tongban-answer+sd-jwt"
MAX_DISCLOSURES = 200  # as many as a query may ask items


class InvalidSdJwt(ValueError):
    """The SD-JWT is malformed, its signature does not verify, or a disclosure is not signed."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise InvalidSdJwt("not base64url") from err


def digest(disclosure: str) -> str:
    """A disclosure's digest as listed in ``_sd`` (RFC 9901 §4.2.3): SHA-256 of its ASCII form."""
    return b64url(hashlib.sha256(disclosure.encode()).digest())


def disclosure(name: str, value: str, salt: str | None = None) -> str:
    """One object-property disclosure: ``[salt, name, value]`` (128-bit random salt)."""
    salt = salt or b64url(secrets.token_bytes(16))
    return b64url(orjson.dumps([salt, name, value]))


def public_jwk(key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The RFC 8037 OKP JWK of an Ed25519 public key."""
    x = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(x), "kid": kid, "alg": ALG, "use": "sig"}


def public_key(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise InvalidSdJwt("not an Ed25519 JWK")
    try:
        return Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    except ValueError as err:
        raise InvalidSdJwt("not an Ed25519 public key") from err


def issue(claims: Mapping[str, Any], items: Mapping[str, str], key: Ed25519PrivateKey, kid: str) -> str:
    """The SD-JWT (``<jwt>~<disclosure>~…~``) signing ``claims`` in the clear and every one of
    ``items`` as a selectively disclosable claim."""
    disclosures = [disclosure(name, value) for name, value in items.items()]
    # Sorted digests: the order of _sd says nothing about the order of the items (RFC 9901 §4.2.4.1).
    payload = {**claims, "_sd": sorted(digest(d) for d in disclosures), "_sd_alg": SD_ALG}
    header = {"alg": ALG, "typ": TYP, "kid": kid}
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(payload))}"
    jwt = f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"
    return "~".join([jwt, *disclosures, ""])


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified SD-JWT: its header, the signed payload (``_sd`` digests included), the disclosed
    items by name, and each item's disclosure (to pass some of them on)."""

    jwt: str
    header: dict[str, Any]
    payload: dict[str, Any]
    items: dict[str, Any]
    disclosures: dict[str, str]

    def present(self, names: Iterable[str]) -> str:
        """The SD-JWT carrying only the disclosures of ``names`` (RFC 9901 §4: the holder drops
        the others; the issuer's signature still covers what is left)."""
        kept = [self.disclosures[n] for n in names if n in self.disclosures]
        return "~".join([self.jwt, *kept, ""])


def unverified_header(sd_jwt: str) -> dict[str, Any]:
    """The JOSE header (to pick the key by ``kid``); trust nothing in it before :func:`verify`."""
    header = _json(sd_jwt.split(".", 1)[0])
    if not isinstance(header, dict):
        raise InvalidSdJwt("header is not a JSON object")
    return header


def verify(sd_jwt: str, keys: Mapping[str, Ed25519PublicKey]) -> Verified:
    """Check the issuer's signature with the key its ``kid`` names in ``keys``, and that every
    disclosure is signed (its digest in ``_sd``, none twice); the disclosed items by name."""
    parts = sd_jwt.split("~")
    if len(parts) < 2 or parts[-1] != "":
        raise InvalidSdJwt("not an SD-JWT without key binding (<jwt>~<disclosures>~)")
    jwt, disclosures = parts[0], parts[1:-1]
    if len(disclosures) > MAX_DISCLOSURES:
        raise InvalidSdJwt("too many disclosures")
    segments = jwt.split(".")
    if len(segments) != 3:
        raise InvalidSdJwt("the issuer-signed JWT is not a compact JWS")
    header = unverified_header(jwt)
    if header.get("alg") != ALG:
        raise InvalidSdJwt(f"algorithm {header.get('alg')!r} is not {ALG}")
    key = keys.get(str(header.get("kid", "")))
    if key is None:
        raise InvalidSdJwt(f"unknown key {header.get('kid')!r}")
    try:
        key.verify(b64url_decode(segments[2]), f"{segments[0]}.{segments[1]}".encode("ascii"))
    except (InvalidSignature, UnicodeEncodeError) as err:
        raise InvalidSdJwt("the issuer's signature does not verify") from err
    payload = _json(segments[1])
    if not isinstance(payload, dict) or payload.get("_sd_alg") != SD_ALG or not isinstance(payload.get("_sd"), list):
        raise InvalidSdJwt("payload without _sd digests (sha-256)")
    signed = set(payload["_sd"])
    items: dict[str, Any] = {}
    by_name: dict[str, str] = {}
    seen: set[str] = set()
    for d in disclosures:
        h = digest(d)
        if h not in signed or h in seen:
            raise InvalidSdJwt("a disclosure is not signed by the issuer, or is repeated")
        seen.add(h)
        decoded = _json(d)
        if not (isinstance(decoded, list) and len(decoded) == 3 and all(isinstance(v, str) for v in decoded[:2])):
            raise InvalidSdJwt("a disclosure is not [salt, name, value]")
        name = decoded[1]
        if name in items or name in payload or name in ("_sd", "..."):
            raise InvalidSdJwt(f"claim {name!r} disclosed twice or overriding a signed claim")
        items[name] = decoded[2]
        by_name[name] = d
    return Verified(jwt, header, payload, items, by_name)


def sd_hash(sd_jwt: str) -> str:
    """SHA-256 (hex) of the SD-JWT as sent: what audit keeps to tie a record to an answer."""
    return hashlib.sha256(sd_jwt.encode()).hexdigest()


def _json(segment: str) -> Any:
    try:
        return orjson.loads(b64url_decode(segment))
    except orjson.JSONDecodeError as err:
        raise InvalidSdJwt("not JSON") from err
