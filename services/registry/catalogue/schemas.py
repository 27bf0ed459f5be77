"""Catalogue schemas. Enumerations follow 发改高技〔2017〕1272号 and GB/T 21063 (MISSION.md)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from services.common.masking import MASKING_RULES
from services.common.schemas import Strict
from services.registry.models import ResourceStatus

Classification = Literal["basic", "theme", "department"]  # 基础 / 主题 / 部门
ResourceFormat = Literal["电子文件", "电子表格", "数据库", "图形图像", "流媒体", "自描述格式", "服务接口"]
DataType = Literal["C", "N", "Y", "D", "T", "L", "M", "G", "B", "I", "F"]
ShareType = Literal["unconditional", "conditional", "none"]  # 无条件 / 有条件 / 不予共享
ShareMode = Literal["接口", "库表", "文件"]
UpdateCycle = Literal["实时", "每日", "每周", "每月", "每季度", "每半年", "每年", "其他"]
SubjectKind = Literal["id_card", "credit_code"]
MaskingRule = Literal["id_card", "mobile", "name", "full"]

assert set(MaskingRule.__args__) == set(MASKING_RULES)  # type: ignore[attr-defined]


class ItemSpec(Strict):
    """信息项: name, 数据类型, length, whether sensitive, and its default masking rule."""

    name: str = Field(min_length=1, max_length=50)
    data_type: DataType
    length: int = Field(ge=1, le=4000)
    sensitive: bool = False
    masking: MaskingRule | None = None


class ShareSpec(Strict):
    type: ShareType
    condition: str | None = Field(None, max_length=500)
    basis: str | None = Field(None, max_length=500)
    mode: ShareMode = "接口"

    @model_validator(mode="after")
    def reasons_given(self) -> ShareSpec:
        # 以共享为原则、不共享为例外: a restriction must say why.
        if self.type == "conditional" and not self.condition:
            raise ValueError("share.condition is required for conditional sharing (有条件共享)")
        if self.type == "none" and not self.basis:
            raise ValueError("share.basis (legal basis) is required for 不予共享")
        return self


class OpenSpec(Strict):
    public: bool = False
    condition: str | None = Field(None, max_length=500)


class ResourceCreate(Strict):
    name: str = Field(min_length=2, max_length=100)
    summary: str = Field(min_length=1, max_length=2000)
    category: str = Field(pattern=r"^[1-9]\d{5}(\d{1,6})?$", description="分类码: 类1+项2+目3(+细目n) digits")
    classification: Classification
    format: ResourceFormat = "服务接口"
    items: list[ItemSpec] = Field(min_length=1, max_length=200)
    share: ShareSpec
    open: OpenSpec = OpenSpec()
    update_cycle: UpdateCycle
    related_codes: list[str] = Field(default_factory=list, max_length=50)
    subject_types: list[SubjectKind] = Field(default=["id_card"], min_length=1, max_length=2)

    @model_validator(mode="after")
    def unique_items(self) -> ResourceCreate:
        names = [i.name for i in self.items]
        if len(names) != len(set(names)):
            raise ValueError("items: names must be unique")
        return self


class ResourcePublic(BaseModel):
    code: str
    name: str
    summary: str
    category: str
    classification: str
    provider: str
    format: str
    items: list[ItemSpec]
    share: ShareSpec
    open: OpenSpec
    update_cycle: str
    related_codes: list[str]
    subject_types: list[str]
    status: ResourceStatus
    version: int
    published_on: date | None


class ResourceList(BaseModel):
    items: list[ResourcePublic]
    next_cursor: str | None


class ClassNodePublic(BaseModel):
    """One node of 信息资源分类: ``code`` is the full 分类码 prefix (类 1, 项 3, 目 6 digits)."""

    code: str
    name: str
    level: str
    kind: Classification
    children: list[ClassNodePublic]


class ClassificationPublic(BaseModel):
    source: str
    classes: list[ClassNodePublic]
