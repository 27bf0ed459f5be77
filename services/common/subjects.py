"""Data subjects (the person or company a query is about) and how they are named without
being named: audit and the exchange keep only a keyed hash of the identifier."""

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

from services.common.identifiers import validate_credit_code, validate_id_card

SubjectType = Literal["id_card", "credit_code"]


def normalise_subject(subject_type: SubjectType, value: str) -> str:
    """Validate the identifier with its check character; raises ``InvalidIdentifier``."""
    return validate_id_card(value) if subject_type == "id_card" else validate_credit_code(value)


def subject_hash(key: str, subject_type: str, value: str) -> str:
    """HMAC-SHA256 over ``<type>:<value>``; the same key lets audit match a subject given in clear."""
    return hmac.new(key.encode(), f"{subject_type}:{value}".encode(), hashlib.sha256).hexdigest()


def subject_hashes(keys: Mapping[str, str], subject_type: str, value: str) -> dict[str, str]:
    """The subject's hash under every key (id → hash): records made before a key rotation were
    hashed with an older key, and stay findable while that key is kept."""
    return {key_id: subject_hash(key, subject_type, value) for key_id, key in keys.items()}
