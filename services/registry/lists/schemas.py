"""Schemas of the three lists (三清单): 责任清单, 需求清单, 负面清单."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from services.common.identifiers import validate_credit_code
from services.common.schemas import Strict
from services.registry.applications.schemas import SERVICE_ITEM_PATTERN
from services.registry.catalogue.schemas import ShareMode, ShareType, UpdateCycle
from services.registry.models import SHARE_MODES, SHARE_TYPES, UPDATE_CYCLES, DemandStatus

# The tables' CHECKs are written from these tuples; they must be the catalogue's own values.
assert (ShareType.__args__, ShareMode.__args__, UpdateCycle.__args__) == (SHARE_TYPES, SHARE_MODES, UPDATE_CYCLES)  # type: ignore[attr-defined]


class ResponsibilityStatus(StrEnum):
    """A 责任清单 line's status as read on a business date."""

    PLANNED = "planned"  # 计划提供, not yet due
    FULFILLED = "fulfilled"  # 已提供
    OVERDUE = "overdue"  # 逾期: planned and past its due date


# InvalidIdentifier is a ValueError: pydantic reports it as a validation error with its message.
CreditCode = Annotated[str, Field(min_length=18, max_length=18), AfterValidator(validate_credit_code)]
ItemName = Annotated[str, Field(min_length=1, max_length=50)]
Items = Annotated[list[ItemName], Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(min_length=2, max_length=1000)]
LegalBasis = Annotated[str, Field(min_length=2, max_length=500, description="法律、行政法规或国家政策依据")]


def unique(items: list[str]) -> list[str]:
    if len(set(items)) != len(items):
        raise ValueError("each 信息项 may be listed once")
    return items


UniqueItems = Annotated[Items, AfterValidator(unique)]
# What a 责任清单 line promises: to share (a refusal goes on the 负面清单 instead).
Promised = Literal["unconditional", "conditional"]


# --------------------------------------------------------------------------- 责任清单


class ResponsibilityCreate(Strict):
    """A line of the caller's department's 责任清单. It is fulfilled when the department publishes a
    resource of this ``name`` whose 信息项 include ``items``."""

    name: str = Field(min_length=2, max_length=100, description="信息资源名称")
    items: UniqueItems
    share_type: Promised = "conditional"
    mode: ShareMode = "接口"
    update_cycle: UpdateCycle = "每日"
    due_by: date


class ResponsibilityPatch(Strict):
    """Change a planned line (a fulfilled one is history)."""

    name: str | None = Field(None, min_length=2, max_length=100)
    items: UniqueItems | None = None
    share_type: Promised | None = None
    mode: ShareMode | None = None
    update_cycle: UpdateCycle | None = None
    due_by: date | None = None

    @model_validator(mode="after")
    def no_nulls(self) -> ResponsibilityPatch:
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"may not be null: {', '.join(sorted(nulls))}")
        return self


class ResponsibilityPublic(BaseModel):
    id: uuid.UUID
    dept: str
    name: str
    items: list[str]
    share_type: str
    mode: str
    update_cycle: str
    due_by: date
    status: ResponsibilityStatus
    fulfilled_by: str | None
    fulfilled_on: date | None
    demand_id: uuid.UUID | None


class ResponsibilityList(BaseModel):
    items: list[ResponsibilityPublic]
    next_cursor: str | None


# --------------------------------------------------------------------------- 需求清单


class DemandCreate(Strict):
    """A consumer department's 需求: which data, for which 事项, on what basis, how often; routed to
    the presumed provider."""

    provider: CreditCode = Field(description="统一社会信用代码 of the presumed providing department")
    name: str = Field(min_length=2, max_length=100, description="the data asked for")
    items: UniqueItems
    service_item: str = Field(pattern=SERVICE_ITEM_PATTERN, description="事项 code the data is needed for")
    basis: LegalBasis
    update_cycle: UpdateCycle = "实时"


class DemandAccept(Strict):
    """Accepting adds a line to the provider's 责任清单, due by ``due_by``."""

    due_by: date
    share_type: Promised = "conditional"
    mode: ShareMode = "接口"


class DemandReject(Strict):
    reason: Reason


class DemandPublic(BaseModel):
    id: uuid.UUID
    requester: str
    provider: str
    name: str
    items: list[str]
    service_item: str
    basis: str
    update_cycle: str
    status: DemandStatus
    reason: str | None
    responsibility_id: uuid.UUID | None
    created_at: datetime
    decided_at: datetime | None


class DemandList(BaseModel):
    items: list[DemandPublic]
    next_cursor: str | None


# --------------------------------------------------------------------------- 负面清单


class NegativeLineCreate(Strict):
    """Put a resource of the caller's department, or one 信息项 of it (``item``), on the 负面清单."""

    resource: str = Field(min_length=3, max_length=40)
    item: ItemName | None = None
    basis: LegalBasis


class NegativeLinePublic(BaseModel):
    id: uuid.UUID
    dept: str
    resource: str
    item: str | None
    basis: str
    created_at: datetime


class NegativeLineAdded(NegativeLinePublic):
    """A new line, with the grants its listing revoked (撤销的授权)."""

    revoked_grants: list[uuid.UUID]


class NegativeLineList(BaseModel):
    items: list[NegativeLinePublic]
    next_cursor: str | None
