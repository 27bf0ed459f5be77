"""``python -m services.exchange verify <answer.json>``: prove what the provider said (核验应答).

Takes an answer as the exchange returned it (``POST /v1/exchange/queries`` or
``GET /v1/exchange/queries/{id}``), or a bare SD-JWT, checks the provider's signature over the
issuer-signed claims and every disclosure against them, and prints what the provider signed. The
provider's public keys come from ``--jwks`` (a JWKS file, pinned) or are fetched from the platform
(``GET /v1/exchange/providers/{provider}/jwks`` with ``--token``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from services.common import sdjwt
from services.exchange.answers import keys_by_kid


def fetch_jwks(base_url: str, provider: str, token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{base_url.rstrip('/')}/v1/exchange/providers/{provider}/jwks",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )
    response.raise_for_status()
    jwks: dict[str, Any] = response.json()
    return jwks


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.exchange verify", description=__doc__.splitlines()[0])
    parser.add_argument("answer", type=Path, help="the answer JSON (with sd_jwt), or a file holding the SD-JWT")
    parser.add_argument("--jwks", type=Path, help="the provider's JWKS file (else fetched from --url)")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the platform (gateway) to fetch keys from")
    parser.add_argument("--token", default="", help="a bearer token for fetching the keys")
    args = parser.parse_args(argv)
    text = args.answer.read_text().strip()
    answer: dict[str, Any] = orjson.loads(text) if text.startswith("{") else {"sd_jwt": text}
    token = answer.get("sd_jwt")
    if not isinstance(token, str):
        print("✗ no sd_jwt in the answer", file=sys.stderr)
        return 2
    try:
        claims = orjson.loads(sdjwt.b64url_decode(token.split(".")[1]))
        provider = str(claims.get("provider", ""))
        jwks = orjson.loads(args.jwks.read_bytes()) if args.jwks else fetch_jwks(args.url, provider, args.token)
        verified = sdjwt.verify(token, keys_by_kid(jwks))
    except (sdjwt.InvalidSdJwt, httpx.HTTPError, ValueError, IndexError, OSError) as err:  # JSON errors are ValueErrors
        print(f"✗ not verified: {err}", file=sys.stderr)
        return 1
    signed = {k: v for k, v in verified.payload.items() if k not in ("_sd", "_sd_alg")}
    print(f"✓ signed by provider {provider} with key {verified.header.get('kid')}")
    for name, value in signed.items():
        print(f"  {name}: {value}")
    print("disclosed items (signed by the provider):")
    for name, value in verified.items.items():
        print(f"  {name}: {value}")
    undisclosed = len(verified.payload["_sd"]) - len(verified.items)
    print(f"items not disclosed (masked or not asked): {undisclosed}")
    # The answer's data must not contradict what was signed: a disclosed item shown otherwise is forged.
    shown = answer.get("data") or {}
    forged = [n for n, v in verified.items.items() if n in shown and shown[n] != v]
    if forged:
        print(f"✗ data differs from the signed items: {', '.join(forged)}", file=sys.stderr)
        return 1
    return 0
