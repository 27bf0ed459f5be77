"""Schemas of service items (政务服务事项) and their materials (申请材料)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, Field, model_validator

from services.common.schemas import Strict
from services.registry.applications.schemas import SERVICE_ITEM_PATTERN
from services.registry.lists.schemas import UniqueItems
from services.registry.models import MaterialNecessity, MaterialSource


class MaterialSpec(Strict):
    """名称, 来源渠道, 必要性; a government-issued material (政府部门核发) may name the resource
    and the 信息项 of it that cover it, so that the exchange can fetch it instead (免提交)."""

    name: str = Field(min_length=2, max_length=200, description="材料名称")
    source: MaterialSource = Field(description="来源渠道")
    necessity: MaterialNecessity = Field(MaterialNecessity.REQUIRED, description="必要性")
    resource: str | None = Field(None, min_length=3, max_length=40, description="信息资源代码 it maps to")
    items: UniqueItems | None = Field(None, description="the 信息项 of that resource covering the material")

    @model_validator(mode="after")
    def mapping_complete(self) -> MaterialSpec:
        if (self.resource is None) != (self.items is None):
            raise ValueError("resource and items go together: a mapping names the resource and its covering items")
        if self.resource is not None and self.source != MaterialSource.GOVERNMENT:
            raise ValueError("only a government-issued material (source=government, 政府部门核发) maps to a resource")
        return self


class ServiceItemCreate(Strict):
    code: str = Field(pattern=SERVICE_ITEM_PATTERN, description="事项编码")
    name: str = Field(min_length=2, max_length=200, description="事项名称")
    materials: list[MaterialSpec] = Field(default_factory=list, max_length=100)


class ServiceItemPatch(Strict):
    name: str = Field(min_length=2, max_length=200)


class MaterialPublic(BaseModel):
    id: uuid.UUID
    service_item: str
    name: str
    source: MaterialSource
    necessity: MaterialNecessity
    resource: str | None
    items: list[str]
    exempt: bool = Field(description="免提交 now: the exchange can fetch it (the rule of GET /v1/registry/stats)")


class ServiceItemPublic(BaseModel):
    code: str
    name: str
    dept: str
    materials: list[MaterialPublic]
    exempt_materials: int = Field(description="its materials that are 免提交 now")
    exempt_rate: float | None = Field(description="免提交率 of this item; null when it has no materials")
    created_at: datetime
    updated_at: datetime


class ServiceItemList(BaseModel):
    items: list[ServiceItemPublic]
    next_cursor: str | None


# --------------------------------------------------------------------------- GET /v1/registry/stats


class ResponsibilityCounts(BaseModel):
    total: int = 0
    fulfilled: int = 0
    overdue: int = 0
    fulfilment_rate: float | None = None  # fulfilled / total; None when there are no lines


class ApplicationCounts(BaseModel):
    pending: int = 0  # 待审批
    overdue: int = 0  # pending past their due date (10 working days)


class DepartmentStats(BaseModel):
    """The figures of one department, or of all (``dept`` None)."""

    dept: str | None
    materials: int = 0  # 申请材料 of the service items it implements
    exempt_materials: int = 0  # 免提交
    exempt_rate: float | None = None  # 免提交率; None when there are no materials
    resources_by_share: dict[str, int] = Field(default_factory=dict)  # published entries per 共享类型
    responsibilities: ResponsibilityCounts = Field(default_factory=ResponsibilityCounts)
    applications: ApplicationCounts = Field(default_factory=ApplicationCounts)  # as the provider


class StatsPublic(BaseModel):
    as_of: datetime  # live grants are those valid at this instant
    business_date: date  # overdue means due before this day
    overall: DepartmentStats
    departments: list[DepartmentStats]
    calendar: CalendarCoverage


class CalendarCoverage(BaseModel):
    """Which years the working-day calendar (工作日历) knows; due dates in any other year skip
    weekends only, until that year's State Council notice is added."""

    covered_years: list[int]
    business_year_covered: bool = Field(description="false: this year's due dates are counted on weekends only")
