"""Data subjects are named in audit only by a keyed hash."""

import pytest

from services.common.identifiers import InvalidIdentifier
from services.common.subjects import normalise_subject, subject_hash

ID_CARD = "11010519491231002X"
CREDIT_CODE = "91350100M000100Y43"


def test_hash_is_deterministic() -> None:
    assert subject_hash("k", "id_card", ID_CARD) == subject_hash("k", "id_card", ID_CARD)


def test_hash_is_hex_sha256_and_does_not_contain_the_identifier() -> None:
    digest = subject_hash("k", "id_card", ID_CARD)
    assert len(digest) == 64
    int(digest, 16)
    assert ID_CARD not in digest


def test_hash_depends_on_key() -> None:
    assert subject_hash("k1", "id_card", ID_CARD) != subject_hash("k2", "id_card", ID_CARD)


def test_hash_depends_on_type() -> None:
    assert subject_hash("k", "id_card", CREDIT_CODE) != subject_hash("k", "credit_code", CREDIT_CODE)


def test_hash_depends_on_value() -> None:
    assert subject_hash("k", "id_card", ID_CARD) != subject_hash("k", "id_card", "110101199003071234")


def test_normalised_subjects_hash_the_same_however_typed() -> None:
    typed = normalise_subject("id_card", " " + ID_CARD.lower())
    assert subject_hash("k", "id_card", typed) == subject_hash("k", "id_card", ID_CARD)


def test_normalise_id_card() -> None:
    assert normalise_subject("id_card", ID_CARD.lower()) == ID_CARD


def test_normalise_credit_code() -> None:
    assert normalise_subject("credit_code", CREDIT_CODE.lower()) == CREDIT_CODE


def test_normalise_refuses_bad_id_card() -> None:
    with pytest.raises(InvalidIdentifier, match="居民身份证号码 check digit"):
        normalise_subject("id_card", "110105194912310021")


def test_normalise_refuses_bad_credit_code() -> None:
    with pytest.raises(InvalidIdentifier, match="统一社会信用代码 check character"):
        normalise_subject("credit_code", "91350100M000100Y40")


def test_normalise_checks_by_the_declared_type() -> None:
    # A valid 统一社会信用代码 given as an ID card number is refused, and vice versa.
    with pytest.raises(InvalidIdentifier, match="居民身份证号码"):
        normalise_subject("id_card", CREDIT_CODE)
    with pytest.raises(InvalidIdentifier, match="统一社会信用代码"):
        normalise_subject("credit_code", ID_CARD)
