"""Exchange API schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

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
    # sync (the default): the answer in this call. async: 202 at once, the answer read by id (and
    # POSTed to the system's registered callback URL when ``callback_url`` names it).
    mode: Literal["sync", "async"] = "sync"
    timeout_ms: int | None = Field(None, ge=100, le=120_000)
    callback_url: str | None = Field(
        None, min_length=1, max_length=500, description="async only: a registered https URL"
    )

    @model_validator(mode="after")
    def callback_only_async(self) -> QueryCreate:
        if self.callback_url is not None and self.mode != "async":
            raise ValueError("callback_url is for mode async only")
        return self


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


class EvidenceCreate(Strict):
    """免提交 in one call: every government-issued material of ``service_item`` about ``subject``."""

    service_item: str = Field(pattern=r"^[0-9A-Za-z\-]{4,64}$", description="事项编码")
    subject: Subject
    purpose: str | None = Field(
        None, pattern=r"^[0-9A-Za-z\-]{4,64}$", description="事项 code the grants name; the service item by default"
    )
    timeout_ms: int | None = Field(None, ge=100, le=120_000, description="per material query")


class MaterialOutcome(StrEnum):
    FETCHED = "fetched"  # the provider answered: the applicant need not submit it (免提交)
    DENIED = "denied"  # the sharing rules refused it (no grant, revoked, quota…): the problem says which
    UNAVAILABLE = "unavailable"  # not mapped to a resource, no record, provider error or timeout


class MaterialResult(BaseModel):
    material_id: uuid.UUID
    name: str
    necessity: str
    resource: str | None
    outcome: MaterialOutcome
    query_id: uuid.UUID | None = None
    problem: dict[str, Any] | None = None  # why it was not fetched (RFC 9457, as the query path answers)
    answer: dict[str, Any] | None = None  # the query's answer, as GET /v1/exchange/queries/{id} shows it


class EvidenceBundlePublic(BaseModel):
    id: uuid.UUID
    service_item: str
    purpose: str
    materials_total: int = Field(description="every material of the service item")
    government_issued: int = Field(description="materials issued by a government department (fetchable)")
    exempt: int = Field(description="免提交: materials fetched, which the applicant no longer submits")
    materials: list[MaterialResult]
    created_at: datetime


class BatchCreate(Strict):
    """批量查询 — one question about many subjects: each subject becomes its own query (own id,
    own audit record, own Idempotency-Key derived from the batch's, own quota count). The list's
    own bound is loose on purpose: the configured limit is checked (and a refusal audited) by the
    exchange, not by validation, which audits nothing."""

    resource: str = Field(min_length=3, max_length=40, description="信息资源代码")
    purpose: str = Field(pattern=r"^[0-9A-Za-z\-]{4,64}$", description="事项 code the data is used for")
    subjects: list[Subject] = Field(min_length=1, max_length=10_000)
    fields: list[str] | None = Field(None, min_length=1, max_length=200)
    mode: Literal["sync", "async"] = "sync"
    timeout_ms: int | None = Field(None, ge=100, le=120_000)
    callback_url: str | None = Field(None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def callback_only_async(self) -> BatchCreate:
        if self.callback_url is not None and self.mode != "async":
            raise ValueError("callback_url is for mode async only")
        return self

    def query(self, subject: Subject) -> QueryCreate:
        """The single query this batch asks about ``subject``."""
        return QueryCreate(
            resource=self.resource,
            purpose=self.purpose,
            subject=subject,
            fields=self.fields,
            mode=self.mode,
            timeout_ms=self.timeout_ms,
            callback_url=self.callback_url,
        )


class CallbackUrlSet(Strict):
    """回调地址 — where the exchange POSTs the outcome of this system's async queries."""

    url: str = Field(min_length=9, max_length=500)


class Accepted(BaseModel):
    """An async query accepted (202): read its outcome at ``location``."""

    id: uuid.UUID
    mode: str = "async"
    location: str
