"""可验证应答 — the provider's answer as an SD-JWT (RFC 9901). The exchange verifies it with the
provider's published key and passes on only the disclosures of granted, unmasked items; a masked
item is shown masked and its disclosure never leaves. What the consumer gets verifies with an
independent RFC 9901 implementation (the OpenWallet Foundation reference, ``sd-jwt``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwcrypto.jwk import JWK  # type: ignore[import-untyped]
from sd_jwt.verifier import SDJWTVerifier  # type: ignore[import-untyped]

from services.common import sdjwt
from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.pb import audit_pb2, exchange_pb2
from services.connector.service import Responder, synthetic_residents
from services.exchange import answers
from services.exchange.answers import ProviderKeys, audited
from services.exchange.config import ExchangeSettings
from services.exchange.problems import ExchangeProblem
from services.exchange.service import outcome_of
from services.exchange.verify import main as verify_main

PROVIDER = "111101000000198608"
RESOURCE = "101010/000001"
RESIDENT = synthetic_residents(1, seed=11)[0]
KEY = Ed25519PrivateKey.generate()
JWKS = {"keys": [sdjwt.public_jwk(KEY.public_key(), "k1")]}
KEYS = {"k1": KEY.public_key()}
ASKED = ["姓名", "出生日期", "公民身份号码"]
MASKING = {"姓名": "name", "公民身份号码": "id_card"}


def reply(fields: list[str] = ASKED, provider: str = PROVIDER) -> exchange_pb2.ExchangeReply:
    """An OK reply as the connector makes it, signed by the connector's own SD-JWT issuing."""
    request = exchange_pb2.ExchangeRequest(
        query_id="q-1",
        resource_code=RESOURCE,
        provider_dept=provider,
        subject_type="id_card",
        subject_value=RESIDENT.id_number,
        fields=fields,
    )
    raw = request.SerializeToString()
    request_hash = hashlib.sha256(raw).hexdigest()
    record = {
        "姓名": RESIDENT.name,
        "性别": RESIDENT.gender,
        "出生日期": RESIDENT.birth_date.isoformat(),
        "户籍地址": RESIDENT.address,
        "公民身份号码": RESIDENT.id_number,
    }
    data = {name: record[name] for name in fields}
    answered = exchange_pb2.ExchangeReply(
        query_id="q-1",
        status=exchange_pb2.ExchangeReply.OK,
        provider_dept=provider,
        request_hash=request_hash,
        key_id="k1",
        sd_jwt=Responder(provider, "k1", KEY).answer_sd_jwt(request, request_hash, data),
    )
    answered.data.update(data)
    return answered


def outcome(r: exchange_pb2.ExchangeReply, keys: Any = KEYS) -> tuple[Any, int, dict[str, Any]]:
    head = {"id": "q-1", "resource": RESOURCE, "provider": PROVIDER}
    return outcome_of(r, head, ASKED, MASKING, keys)


def independent(sd_jwt: str) -> dict[str, Any]:
    """The reference implementation's verification; it fails (raises) on any bad signature or digest."""
    verifier = SDJWTVerifier(sd_jwt, lambda issuer, header: JWK(**JWKS["keys"][0]))
    payload: dict[str, Any] = verifier.get_verified_payload()
    return payload


def test_only_unmasked_items_are_disclosed_and_the_consumer_verifies_them_independently() -> None:
    status, http_status, body = outcome(reply())
    assert (status, http_status) == ("completed", 200)
    assert body["masked"] == ["姓名", "公民身份号码"] and body["disclosed"] == ["出生日期"]
    assert body["data"]["出生日期"] == RESIDENT.birth_date.isoformat()
    assert body["data"]["姓名"] != RESIDENT.name  # shown masked, for display only
    # One disclosure: the masked items' clear values are nowhere in what is sent.
    assert body["sd_jwt"].count("~") == 2
    assert RESIDENT.name not in json.dumps(body, ensure_ascii=False)
    assert RESIDENT.id_number not in json.dumps(body, ensure_ascii=False)
    assert body["sd_jwt_sha256"] == hashlib.sha256(body["sd_jwt"].encode()).hexdigest()
    signed = independent(body["sd_jwt"])
    assert signed["出生日期"] == RESIDENT.birth_date.isoformat()
    assert "姓名" not in signed and "公民身份号码" not in signed
    assert signed["query_id"] == "q-1" and signed["resource"] == RESOURCE and signed["provider"] == PROVIDER
    assert signed["request_hash"] == reply().request_hash and isinstance(signed["iat"], int)


def test_a_changed_disclosed_value_fails_here_and_is_not_signed_for_the_independent_verifier() -> None:
    r = reply()
    jwt, *disclosures, _ = r.sd_jwt.split("~")
    forged = sdjwt.disclosure("出生日期", "1900-01-01")
    r.sd_jwt = "~".join([jwt, forged, *disclosures[1:], ""])
    _, http_status, body = outcome(r)
    assert http_status == 502 and body["type"].endswith(ExchangeProblem.UNVERIFIABLE_ANSWER)
    assert "data" not in body
    # The reference verifier drops a disclosure no digest signs: the forged value never shows.
    assert "出生日期" not in independent("~".join([jwt, forged, ""]))


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda r: setattr(r, "sd_jwt", ""), id="no SD-JWT"),
        pytest.param(lambda r: setattr(r, "query_id", "q-other"), id="signed for another query"),
        pytest.param(lambda r: setattr(r, "request_hash", "0" * 64), id="signed for another request"),
        pytest.param(lambda r: setattr(r, "sd_jwt", r.sd_jwt[:150] + "x" + r.sd_jwt[151:]), id="payload changed"),
    ],
)
def test_an_answer_that_does_not_verify_is_502_and_passes_nothing_on(spoil: Any) -> None:
    r = reply()
    spoil(r)
    status, http_status, body = outcome(r)
    assert (status, http_status) == ("provider_error", 502)
    assert body["type"].endswith(ExchangeProblem.UNVERIFIABLE_ANSWER) and "sd_jwt" not in body


def test_an_answer_to_another_request_than_the_one_sent_does_not_verify() -> None:
    r = reply()
    head = {"id": "q-1", "resource": RESOURCE, "provider": PROVIDER}
    assert outcome_of(r, head, ASKED, MASKING, KEYS, request_hash=r.request_hash)[1] == 200
    assert outcome_of(r, head, ASKED, MASKING, KEYS, request_hash="0" * 64)[1] == 502


def test_an_answer_signed_by_another_providers_key_does_not_verify() -> None:
    r = reply()
    other = Ed25519PrivateKey.generate()
    claims = {"query_id": "q-1", "request_hash": r.request_hash, "provider": PROVIDER, "resource": RESOURCE}
    r.sd_jwt = sdjwt.issue(claims, {"出生日期": "x"}, other, "k1")  # all bound right, the wrong key
    assert outcome(r)[1] == 502
    assert outcome(reply(), keys={})[1] == 502  # no key known: nothing verifies


async def test_provider_keys_are_fetched_from_the_gateway_and_refetched_for_a_new_kid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(answers, "REFETCH_AFTER_S", 0.05)
    served: list[dict[str, Any]] = [JWKS]
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, json=served[0])

    settings = ExchangeSettings(gateway_url="http://gateway.test")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        keys = ProviderKeys(settings, client)
        assert set(await keys.keys(PROVIDER, reply().sd_jwt)) == {"k1"}
        assert set(await keys.keys(PROVIDER, reply().sd_jwt)) == {"k1"}  # cached
        assert calls == [f"http://gateway.test/v1/departments/{PROVIDER}/answer-keys"]
        # A new key (registered at the gateway): its kid makes one refetch, for all who ask at once.
        newer = Ed25519PrivateKey.generate()
        served[0] = {"keys": [*JWKS["keys"], sdjwt.public_jwk(newer.public_key(), "k2")]}
        signed = sdjwt.issue({"provider": PROVIDER}, {"性别": "男"}, newer, "k2")
        await asyncio.sleep(answers.REFETCH_AFTER_S)  # refetches are throttled
        found = await asyncio.gather(*(keys.keys(PROVIDER, signed) for _ in range(20)))
        assert all(set(k) == {"k1", "k2"} for k in found)
        assert len(calls) == 2


def test_the_verify_command_proves_the_disclosed_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, body = outcome(reply())
    answer, jwks = tmp_path / "answer.json", tmp_path / "jwks.json"
    answer.write_text(json.dumps(body, ensure_ascii=False))
    jwks.write_text(json.dumps(JWKS))
    assert verify_main([str(answer), "--jwks", str(jwks)]) == 0
    out = capsys.readouterr().out
    assert f"出生日期: {RESIDENT.birth_date.isoformat()}" in out and "query_id: q-1" in out
    body["data"]["出生日期"] = "1900-01-01"  # shown otherwise than signed
    answer.write_text(json.dumps(body, ensure_ascii=False))
    assert verify_main([str(answer), "--jwks", str(jwks)]) == 1
    wrong = {"keys": [sdjwt.public_jwk(Ed25519PrivateKey.generate().public_key(), "k1")]}
    jwks.write_text(json.dumps(wrong))
    assert verify_main([str(answer), "--jwks", str(jwks)]) == 1


def test_audit_keeps_the_answers_hash_and_the_items_disclosed() -> None:
    _, _, body = outcome(reply())
    ctx = AuditContext(actor="sys-a", consumer_dept="x", fields=tuple(ASKED), query_id="q-1")
    message = audit_message(
        "audit.events", "exchange", AuditAction.EXCHANGE_QUERY, audited(ctx, body), outcome="completed"
    )
    event = audit_pb2.AuditEvent.FromString(message.value)
    assert event.answer_sha256 == hashlib.sha256(body["sd_jwt"].encode()).hexdigest()
    assert list(event.disclosed_fields) == ["出生日期"] and list(event.fields) == ASKED
    _, _, refused = outcome(reply(), keys={})
    assert audited(ctx, refused) == ctx  # an unverifiable answer passed nothing on: no hash


def test_the_verify_command_refuses_what_it_cannot_check(tmp_path: Path) -> None:
    answer, jwks = tmp_path / "answer.json", tmp_path / "jwks.json"
    jwks.write_text("not json")
    answer.write_text(json.dumps({"data": {}}))
    assert verify_main([str(answer), "--jwks", str(jwks)]) == 2  # no sd_jwt at all
    answer.write_text(reply().sd_jwt)  # a bare SD-JWT is accepted as input…
    assert verify_main([str(answer), "--jwks", str(jwks)]) == 1  # …but a broken key file verifies nothing
    jwks.write_text(json.dumps(JWKS))
    assert verify_main([str(answer), "--jwks", str(jwks)]) == 0
