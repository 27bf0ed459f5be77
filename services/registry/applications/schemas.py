"""Application and grant schemas (共享申请, 授权)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Self

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from services.common.schemas import Strict
from services.registry.catalogue.schemas import MaskingRule
from services.registry.models import ApplicationStatus, GrantStatus

ItemName = str
SERVICE_ITEM_PATTERN = r"^[0-9A-Za-z\-]{4,64}$"


class Purpose(Strict):
    service_item: str = Field(pattern=SERVICE_ITEM_PATTERN, description="事项 code the data will be used for")
    basis: str | None = Field(None, max_length=500)


class ApplicationCreate(Strict):
    resource: str = Field(min_length=3, max_length=40)
    client_id: str = Field(min_length=1, max_length=64)
    items: list[ItemName] = Field(min_length=1, max_length=200)
    purpose: Purpose
    valid_days: int = Field(365, ge=1, le=1095)
    daily_quota: int = Field(1000, ge=1, le=10_000_000)


class ApplicationApprove(Strict):
    """The approver may narrow what was asked for, never widen it. The validity is narrowed either
    in days from the decision (``valid_days``) or as an instant (``valid_until``), not both."""

    items: list[ItemName] | None = Field(None, min_length=1, max_length=200)
    valid_days: int | None = Field(None, ge=1, le=1095)
    valid_until: AwareDatetime | None = Field(
        None, description="When the grant ends: after now, and no later than the validity asked for"
    )
    daily_quota: int | None = Field(None, ge=1, le=10_000_000)
    masking: dict[str, MaskingRule] = Field(default_factory=dict, max_length=200)

    @model_validator(mode="after")
    def one_validity(self) -> Self:
        if self.valid_days is not None and self.valid_until is not None:
            raise ValueError("give valid_days or valid_until, not both")
        return self


class ApplicationReject(Strict):
    reason: str = Field(min_length=2, max_length=1000)


class ApplicationPublic(BaseModel):
    id: uuid.UUID
    resource: str
    provider: str
    consumer: str
    client_id: str
    items: list[str]
    purpose: Purpose
    valid_days: int
    daily_quota: int
    status: ApplicationStatus
    due_by: date | None
    working_days_left: int | None = Field(
        None,
        description="Working days (工作日, on the official calendar) from today to due_by; 0 on the due date, "
        "negative when overdue. Only for a pending application.",
    )
    overdue: bool = Field(False, description="Pending past its due date (逾期)")
    reason: str | None
    grant_id: uuid.UUID | None = None


class ApplicationList(BaseModel):
    """A page of applications, oldest first (for a queue of pending ones: the most urgent first,
    as due dates follow filing dates)."""

    items: list[ApplicationPublic]
    next_cursor: str | None
    overdue: int = Field(
        description="Overdue applications among all those the filters select (every page, the overdue filter aside)"
    )


class GrantPublic(BaseModel):
    id: uuid.UUID
    application_id: uuid.UUID
    resource: str
    provider: str
    consumer: str
    client_id: str
    items: list[str]
    purpose: str
    masking: dict[str, str]
    valid_until: datetime
    daily_quota: int
    status: GrantStatus
    revoked_reason: str | None = Field(None, description="Why the provider revoked it (撤销原因)")


class GrantList(BaseModel):
    items: list[GrantPublic]
    next_cursor: str | None


class GrantRevoke(Strict):
    reason: str = Field(min_length=2, max_length=1000)
