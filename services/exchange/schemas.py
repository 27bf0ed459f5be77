"""Exchange API schemas."""

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from services.common.schemas import Strict
from services.common.subjects import SubjectType


class Subject(Strict):
    """The person (居民身份证号码) or organisation (统一社会信用代码) the data is about."""

    type: SubjectType
    value: str = Field(min_length=1, max_length=32)


class QueryCreate(Strict):
    resource: str = Field(min_length=3, max_length=40, description="信息资源代码")
    purpose: str = Field(pattern=r"^[0-9A-Za-z\-]{4,64}$", description="事项 code the data is used for")
    subject: Subject
    fields: list[str] | None = Field(None, min_length=1, max_length=200)
    mode: Literal["sync"] = "sync"
    timeout_ms: int | None = Field(None, ge=100, le=120_000)


class Signature(BaseModel):
    alg: str
    key_id: str
    value: str
    request_hash: str


class QueryResult(BaseModel):
    id: uuid.UUID
    status: str
    resource: str
    provider: str
    data: dict[str, str] | None = None
    masked: list[str] = []
    signature: Signature | None = None
    # The provider's answer as an SD-JWT (RFC 9901) with the disclosures of the unmasked items
    # only; verify it with GET /v1/exchange/providers/{provider}/jwks (python -m services.exchange verify).
    sd_jwt: str | None = None
    sd_jwt_sha256: str | None = None
    disclosed: list[str] = []
