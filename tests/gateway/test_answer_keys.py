"""应答签名公钥 — a provider system's answer-signing keys, registered at the gateway: the authority
the exchange verifies a department's SD-JWT answers with (services/exchange/answers.py)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import ECKey
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common import sdjwt
from services.common.errors import Problem
from services.common.security import Principal, Role
from services.gateway import service
from services.gateway.models import Department, Status, System
from services.gateway.schemas import AnswerKeysBody
from tests.factories import SystemCreateFactory, credit_code, person
from tests.gateway.support import SETTINGS


def jwks(*kids: str) -> dict[str, list[dict[str, str]]]:
    return {"keys": [sdjwt.public_jwk(Ed25519PrivateKey.generate().public_key(), kid) for kid in kids]}


async def provider_system(session: AsyncSession, admin: Principal, department: Department, *roles: str) -> System:
    body = SystemCreateFactory.build(roles=list(roles or ["provider"]))
    system, _ = await service.create_system(session, admin, department.code, body, SETTINGS)
    return system


async def test_the_department_serves_the_keys_its_active_provider_systems_registered(
    session: AsyncSession, admin: Principal, department: Department
) -> None:
    first, second = await provider_system(session, admin, department), await provider_system(session, admin, department)
    disabled = await provider_system(session, admin, department)
    old_and_new = jwks("k-old", "k-new")  # a rotation: both registered, both verify
    await service.set_answer_keys(session, admin, first.client_id, AnswerKeysBody(jwks=old_and_new))
    await service.set_answer_keys(session, admin, second.client_id, AnswerKeysBody(jwks=jwks("k-2")))
    await service.set_answer_keys(session, admin, disabled.client_id, AnswerKeysBody(jwks=jwks("k-disabled")))
    disabled.status = Status.DISABLED
    await session.flush()

    served = await service.department_answer_keys(session, department.code.lower())
    assert {k["kid"] for k in served["keys"]} == {"k-old", "k-new", "k-2"}
    assert [k for k in served["keys"] if k["kid"] != "k-2"] == old_and_new["keys"]

    # The old key withdrawn: it no longer speaks for the department.
    await service.set_answer_keys(
        session, admin, first.client_id, AnswerKeysBody(jwks={"keys": old_and_new["keys"][1:]})
    )
    assert {k["kid"] for k in (await service.department_answer_keys(session, department.code))["keys"]} == {
        "k-new",
        "k-2",
    }


async def test_a_kid_two_systems_registered_with_different_keys_is_left_out(
    session: AsyncSession, admin: Principal, department: Department
) -> None:
    first, second = await provider_system(session, admin, department), await provider_system(session, admin, department)
    await service.set_answer_keys(session, admin, first.client_id, AnswerKeysBody(jwks=jwks("same", "a")))
    await service.set_answer_keys(session, admin, second.client_id, AnswerKeysBody(jwks=jwks("same")))
    assert [k["kid"] for k in (await service.department_answer_keys(session, department.code))["keys"]] == ["a"]


async def test_only_a_provider_system_registers_answer_keys_and_only_its_administrators(
    session: AsyncSession, admin: Principal, department: Department
) -> None:
    consumer = await provider_system(session, admin, department, "consumer")
    with pytest.raises(Problem) as raised:
        await service.set_answer_keys(session, admin, consumer.client_id, AnswerKeysBody(jwks=jwks("k1")))
    assert (raised.value.status, raised.value.code) == (409, "not-a-provider-system")
    provider = await provider_system(session, admin, department)
    other_admin = person(credit_code("110105"), Role.DATA_ADMIN)  # another department's data administrator
    with pytest.raises(Problem) as raised:
        await service.set_answer_keys(session, other_admin, provider.client_id, AnswerKeysBody(jwks=jwks("k1")))
    assert raised.value.status == 404
    own_admin = person(department.code, Role.DATA_ADMIN)
    await service.set_answer_keys(session, own_admin, provider.client_id, AnswerKeysBody(jwks=jwks("k1")))
    assert (await service.department_answer_keys(session, department.code))["keys"][0]["kid"] == "k1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"keys": [ECKey.generate_key("P-256", {"kid": "ec"}).as_dict(private=False)]}, "Ed25519"),
        ({"keys": []}, "1 to 10 keys"),
        ({"keys": [{**sdjwt.public_jwk(Ed25519PrivateKey.generate().public_key(), "k"), "d": "AAAA"}]}, "private"),
        (
            {
                "keys": [
                    {
                        k: v
                        for k, v in sdjwt.public_jwk(Ed25519PrivateKey.generate().public_key(), "k").items()
                        if k != "kid"
                    }
                ]
            },
            "kid",
        ),
    ],
)
def test_answer_keys_are_ed25519_public_keys_with_a_kid(body: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        AnswerKeysBody.model_validate({"jwks": body})


async def test_a_department_without_registered_keys_has_none(session: AsyncSession, department: Department) -> None:
    """No key: the exchange refuses every answer of that department (unverifiable-answer)."""
    assert await service.department_answer_keys(session, department.code) == {"keys": []}
    with pytest.raises(Problem) as raised:
        await service.department_answer_keys(session, credit_code("110101"))
    assert raised.value.status == 404
