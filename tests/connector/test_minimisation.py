"""数据最小化 at the connector: a reply carries the items the request names and nothing else, even
though the backend's record has more (the exchange asks only for granted items)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.pb import exchange_pb2
from services.connector.service import Responder, signed_payload, synthetic_residents

DEPT = "111101000000198608"
RESIDENT = synthetic_residents(1, seed=11)[0]
# What a backend found, by catalogue item (a backend maps its own fields to items).
RECORD = {
    "公民身份号码": RESIDENT.id_number,
    "姓名": RESIDENT.name,
    "性别": RESIDENT.gender,
    "出生日期": RESIDENT.birth_date,
    "户籍地址": RESIDENT.address,
}


@pytest.mark.parametrize(
    ("fields", "returned"),
    [
        (["姓名"], {"姓名": RESIDENT.name}),
        (["户籍地址", "性别"], {"户籍地址": RESIDENT.address, "性别": RESIDENT.gender}),
        (["姓名", "银行账号"], {"姓名": RESIDENT.name}),  # an item the backend does not have
        ([], {}),  # nothing named, nothing sent
    ],
    ids=["one item", "two items", "an item the backend lacks", "none"],
)
def test_a_reply_carries_only_the_items_asked_for(fields: list[str], returned: dict[str, str]) -> None:
    key = Ed25519PrivateKey.generate()
    request = exchange_pb2.ExchangeRequest(
        query_id="q-1", provider_dept=DEPT, subject_type="id_card", subject_value=RESIDENT.id_number, fields=fields
    )
    raw = request.SerializeToString()

    reply = Responder(DEPT, "k1", key).reply(raw, request, RECORD)

    assert reply.status == exchange_pb2.ExchangeReply.OK
    assert dict(reply.data) == returned
    # What is signed is what is sent: the signature covers exactly these items.
    key.public_key().verify(
        base64.b64decode(reply.signature), signed_payload(hashlib.sha256(raw).hexdigest(), dict(reply.data))
    )
