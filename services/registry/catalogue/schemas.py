"""Catalogue schemas. Enumerations follow 发改高技〔2017〕1272号 and GB/T 21063 (MISSION.md)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from services.common.masking import MASKING_RULES
from services.common.schemas import Strict
from services.registry.models import ResourceStatus, VersionStatus

Classification = Literal["basic", "theme", "department"]  # 基础 / 主题 / 部门
ResourceFormat = Literal["电子文件", "电子表格", "数据库", "图形图像", "流媒体", "自描述格式", "服务接口"]
DataType = Literal["C", "N", "Y", "D", "T", "L", "M", "G", "B", "I", "F"]
ShareType = Literal["unconditional", "conditional", "none"]  # 无条件 / 有条件 / 不予共享
ShareMode = Literal["接口", "库表", "文件"]
UpdateCycle = Literal["实时", "每日", "每周", "每月", "每季度", "每半年", "每年", "其他"]
SubjectKind = Literal["id_card", "credit_code"]
MaskingRule = Literal["id_card", "mobile", "name", "full"]

assert set(MaskingRule.__args__) == set(MASKING_RULES)  # type: ignore[attr-defined]

RelatedCode = Annotated[str, Field(min_length=8, max_length=40, description="关联资源代码 of an existing entry")]


# 数据长度 allowed per 数据类型 (GB/T 21063.3 信息项): characters for C and M, digits for the numeric
# types, the fixed width of its text form for D (YYYYMMDD), T (YYYYMMDDhhmmss) and L, bytes for G.
LENGTH_LIMITS: dict[str, tuple[str, int, int]] = {
    "C": ("字符", 1, 4000),
    "N": ("数值", 1, 38),  # precision of a decimal
    "Y": ("货币", 1, 19),
    "D": ("日期", 8, 8),
    "T": ("日期时间", 14, 14),
    "L": ("逻辑", 1, 1),
    "M": ("备注", 1, 65_535),
    "G": ("通用", 1, 1_073_741_823),  # binary content, up to what a bytea holds
    "B": ("双精度", 1, 17),  # significant digits of a double
    "I": ("整型", 1, 19),  # digits of a 64-bit integer
    "F": ("浮点", 1, 17),
}
assert set(LENGTH_LIMITS) == set(DataType.__args__)  # type: ignore[attr-defined]


class ItemSpec(Strict):
    """信息项: name, 数据类型, length (valid for the type: :data:`LENGTH_LIMITS`), whether
    sensitive, and its default masking rule."""

    name: str = Field(min_length=1, max_length=50)
    data_type: DataType
    length: int = Field(ge=1, le=1_073_741_823)
    sensitive: bool = False
    masking: MaskingRule | None = None

    @model_validator(mode="after")
    def length_fits_type(self) -> ItemSpec:
        meaning, low, high = LENGTH_LIMITS[self.data_type]
        if not low <= self.length <= high:
            span = str(low) if low == high else f"{low}–{high}"
            raise ValueError(
                f"信息项 {self.name}: 数据类型 {self.data_type} ({meaning}) 的长度应为 {span}, not {self.length}"
            )
        return self


class ItemPublic(BaseModel):
    """A 信息项 as stored (no validation on the way out: rules may tighten after it was written)."""

    name: str
    data_type: str
    length: int
    sensitive: bool = False
    masking: str | None = None


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
    related_codes: list[RelatedCode] = Field(default_factory=list, max_length=50)
    subject_types: list[SubjectKind] = Field(default=["id_card"], min_length=1, max_length=2)

    @model_validator(mode="after")
    def unique_items(self) -> ResourceCreate:
        if len(set(self.related_codes)) != len(self.related_codes):
            raise ValueError("related_codes: each 关联资源代码 may be listed once")
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
    items: list[ItemPublic]
    share: ShareSpec
    open: OpenSpec
    update_cycle: str
    related_codes: list[str]
    subject_types: list[str]
    status: ResourceStatus
    version: int
    published_on: date | None


class ResourcePatch(Strict):
    """A change to an entry: only the fields given change. The 分类码 (and with it the code) never
    changes, so ``category`` and ``classification`` are not accepted here."""

    name: str | None = Field(None, min_length=2, max_length=100)
    summary: str | None = Field(None, min_length=1, max_length=2000)
    format: ResourceFormat | None = None
    items: list[ItemSpec] | None = Field(None, min_length=1, max_length=200)
    share: ShareSpec | None = None
    open: OpenSpec | None = None
    update_cycle: UpdateCycle | None = None
    related_codes: list[RelatedCode] | None = Field(None, max_length=50)
    subject_types: list[SubjectKind] | None = Field(None, min_length=1, max_length=2)


class ResourceReject(Strict):
    reason: str = Field(min_length=2, max_length=1000)


class FieldChange(BaseModel):
    """One element that differs from the previous version (``items.<name>`` for one 信息项)."""

    field: str
    before: Any
    after: Any


class VersionPublic(BaseModel):
    code: str
    version: int
    status: VersionStatus
    author: str
    decided_by: str | None
    reason: str | None
    published_on: date | None
    created_at: datetime
    updated_at: datetime
    content: dict[str, Any]
    changes: list[FieldChange]  # against the previous version listed; empty for the first


class VersionList(BaseModel):
    items: list[VersionPublic]


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
