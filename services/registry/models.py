"""Registry tables (schema ``registry``)."""

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    Computed,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    event,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

from services.common.db import one_of, schema_metadata
from services.common.outbox import OutboxRow
from services.registry.catalogue.terms import entry_terms, terms


class Base(DeclarativeBase):
    metadata = schema_metadata("registry")


class ResourceStatus(StrEnum):
    """An entry's state: draft → submitted → published → deprecated (a rejection sends it back to draft)."""

    DRAFT = "draft"  # 草稿
    SUBMITTED = "submitted"  # 待审核: submitted by the provider, awaiting the platform administrator
    PUBLISHED = "published"  # 已发布
    DEPRECATED = "deprecated"  # 已废止


class VersionStatus(StrEnum):
    """A version's state. Only one version of an entry is published (serving) at a time; the one it
    replaced is superseded. A draft or submitted version is the entry's pending change."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    PUBLISHED = "published"
    SUPERSEDED = "superseded"  # 已被替代: a later version was published
    DEPRECATED = "deprecated"


class ApplicationStatus(StrEnum):
    PENDING = "pending"  # 待审批 (conditional sharing, within 10 working days)
    APPROVED = "approved"  # 已批准
    REJECTED = "rejected"  # 已驳回 by the provider's approver, with a reason
    REFUSED = "refused"  # 不予共享: refused at once, citing the legal basis


class GrantStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


SHARE_TYPES = ("unconditional", "conditional", "none")
SHARE_MODES = ("接口", "库表", "文件")
UPDATE_CYCLES = ("实时", "每日", "每周", "每月", "每季度", "每半年", "每年", "其他")


def literal_in(column: str, values: tuple[str, ...]) -> CheckConstraint:
    """A CHECK that ``column`` holds one of ``values`` (a catalogue ``Literal``'s arguments), named
    ``ck_<table>_<column>`` like :func:`one_of`."""
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=column)


class Resource(Base):
    """Resource — 信息资源, one catalogue entry (政务信息资源目录)."""

    __tablename__ = "resources"
    __table_args__ = (
        one_of("status", ResourceStatus),
        literal_in("share_type", SHARE_TYPES),
        Index("ix_resources_search_terms", "search_terms", postgresql_using="gin"),
        # A sharing class's entries of one status by code: a search or list filtered by them walks
        # only the entries it keeps (catalogue/search.py: walk_span), not every entry.
        Index("ix_resources_share_type_status_code", "share_type", "status", "code"),
        Index("ix_resources_search_name", "search_name", postgresql_using="gin"),
    )

    code: Mapped[str] = mapped_column(String(40), primary_key=True)  # 信息资源代码: 分类码/顺序码
    name: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(32), index=True)
    classification: Mapped[str] = mapped_column(String(16))
    provider_dept: Mapped[str] = mapped_column(String(18), index=True)
    format: Mapped[str] = mapped_column(String(16))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    share: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # 共享类型 (share.type) as a column of its own, computed by PostgreSQL from ``share`` on every
    # write (COPY and raw SQL included), so that it can be indexed and never disagrees with it.
    share_type: Mapped[str] = mapped_column(String(16), Computed("share ->> 'type'", persisted=True))
    open: Mapped[dict[str, Any]] = mapped_column(JSONB)
    update_cycle: Mapped[str] = mapped_column(String(8))
    related_codes: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    subject_types: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    status: Mapped[ResourceStatus] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer)
    published_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # 全文检索: the terms (catalogue/terms.py) of the name, summary and item names, and of the name
    # alone (for ranking); set on every insert and update (index_terms, below).
    search_terms: Mapped[list[str]] = mapped_column(PG_ARRAY(Text), server_default="{}", deferred=True)
    search_name: Mapped[list[str]] = mapped_column(PG_ARRAY(Text), server_default="{}", deferred=True)


@event.listens_for(Resource, "before_insert")
@event.listens_for(Resource, "before_update")
def index_terms(_mapper: Mapper[Resource], _connection: Connection, resource: Resource) -> None:
    """Keep an entry's search terms with its text: every write of an entry goes through here."""
    resource.search_terms = entry_terms(resource.name, resource.summary, resource.items)
    resource.search_name = terms(resource.name)


class ResourceVersion(Base):
    """One version of a catalogue entry (版本): its full content as the data administrator wrote it.

    ``resources`` holds the serving copy (the published version, or the first draft of an entry
    never published); this table holds every version, so a published entry keeps serving while its
    next version is drafted, submitted and reviewed."""

    __tablename__ = "resource_versions"
    __table_args__ = (one_of("status", VersionStatus),)

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)  # the editable elements (CONTENT_FIELDS)
    status: Mapped[VersionStatus] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(64))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)  # why the platform administrator rejected it
    published_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CategorySequence(Base):
    """The next 顺序码 per 分类码, so codes are dense, unique and never reused."""

    __tablename__ = "category_sequences"

    category: Mapped[str] = mapped_column(String(32), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class Application(Base):
    """Application — 共享申请: a consuming system asks for items of a resource for a purpose."""

    __tablename__ = "applications"
    __table_args__ = (one_of("status", ApplicationStatus),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    resource_code: Mapped[str] = mapped_column(String(40), index=True)
    provider_dept: Mapped[str] = mapped_column(String(18), index=True)
    consumer_dept: Mapped[str] = mapped_column(String(18), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    items: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    purpose: Mapped[dict[str, Any]] = mapped_column(JSONB)
    valid_days: Mapped[int] = mapped_column(Integer)
    daily_quota: Mapped[int] = mapped_column(Integer)
    status: Mapped[ApplicationStatus] = mapped_column(String(16))
    due_by: Mapped[date | None] = mapped_column(Date)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    applicant: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Grant(Base):
    """Grant — 授权: what an approved application lets a system fetch, for which purpose, until when."""

    __tablename__ = "grants"
    __table_args__ = (one_of("status", GrantStatus),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    application_id: Mapped[uuid.UUID] = mapped_column(index=True)
    resource_code: Mapped[str] = mapped_column(String(40), index=True)
    provider_dept: Mapped[str] = mapped_column(String(18), index=True)
    consumer_dept: Mapped[str] = mapped_column(String(18), index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    items: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    purpose: Mapped[str] = mapped_column(String(64))
    masking: Mapped[dict[str, str]] = mapped_column(JSONB)
    valid_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    daily_quota: Mapped[int] = mapped_column(Integer)
    status: Mapped[GrantStatus] = mapped_column(String(16))
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Outbox(OutboxRow, Base):
    pass


# --------------------------------------------------------------------------- the three lists (三清单)


class ResponsibilityState(StrEnum):
    """What a 责任清单 line stores. *Overdue* is not stored: it is a planned line past its due date
    on the business date it is read (see ``lists/service.py``)."""

    PLANNED = "planned"  # 计划提供
    FULFILLED = "fulfilled"  # 已提供: a matching resource was published


class DemandStatus(StrEnum):
    PENDING = "pending"  # 待答复 by the presumed provider
    ACCEPTED = "accepted"  # 已接受: a responsibility line was created
    REJECTED = "rejected"  # 已拒绝, with a reason


class Responsibility(Base):
    """A line of the 责任清单 (responsibility list): what a department must provide, by when."""

    __tablename__ = "responsibilities"
    __table_args__ = (
        one_of("status", ResponsibilityState),
        literal_in("share_type", SHARE_TYPES),
        literal_in("mode", SHARE_MODES),
        literal_in("update_cycle", UPDATE_CYCLES),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    dept: Mapped[str] = mapped_column(String(18), index=True)  # the providing department
    name: Mapped[str] = mapped_column(String(100))  # 信息资源名称 to be published
    items: Mapped[list[str]] = mapped_column(ARRAY(String(50)))  # 信息项 it must carry
    share_type: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(8))
    update_cycle: Mapped[str] = mapped_column(String(8))
    due_by: Mapped[date] = mapped_column(Date)
    status: Mapped[ResponsibilityState] = mapped_column(String(16))
    fulfilled_by: Mapped[str | None] = mapped_column(String(40))  # the resource that fulfilled it
    fulfilled_on: Mapped[date | None] = mapped_column(Date)
    demand_id: Mapped[uuid.UUID | None] = mapped_column()  # the demand whose acceptance created it
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Demand(Base):
    """A line of the 需求清单 (demand list): a consumer department asks the presumed provider for
    data not yet shared."""

    __tablename__ = "demands"
    __table_args__ = (one_of("status", DemandStatus), literal_in("update_cycle", UPDATE_CYCLES))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    requester_dept: Mapped[str] = mapped_column(String(18), index=True)
    provider_dept: Mapped[str] = mapped_column(String(18), index=True)
    name: Mapped[str] = mapped_column(String(100))  # the data asked for
    items: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    service_item: Mapped[str] = mapped_column(String(64))  # 事项 code it is needed for
    basis: Mapped[str] = mapped_column(Text)  # 依据: why the requester may have it
    update_cycle: Mapped[str] = mapped_column(String(8))  # how often it is needed
    status: Mapped[DemandStatus] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)  # the provider's reason for a rejection
    responsibility_id: Mapped[uuid.UUID | None] = mapped_column()
    requested_by: Mapped[str] = mapped_column(String(64))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NegativeLine(Base):
    """A line of the 负面清单 (negative list): a resource, or one 信息项 of it, that is not shared,
    with its legal basis. Nothing on it can be granted."""

    __tablename__ = "negative_lines"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    dept: Mapped[str] = mapped_column(String(18), index=True)  # the resource's provider
    resource_code: Mapped[str] = mapped_column(String(40), index=True)
    item: Mapped[str | None] = mapped_column(String(50))  # None: the whole resource
    basis: Mapped[str] = mapped_column(Text)  # 法律、行政法规或国家政策依据
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --------------------------------------------------------------------------- service items (事项) and materials


class MaterialSource(StrEnum):
    """来源渠道 of a material."""

    GOVERNMENT = "government"  # 政府部门核发: may map to a catalogue resource
    APPLICANT = "applicant"  # 申请人自备
    INTERMEDIARY = "intermediary"  # 中介服务机构出具
    OTHER = "other"  # 其他


class MaterialNecessity(StrEnum):
    """必要性 of a material."""

    REQUIRED = "required"  # 必要
    OPTIONAL = "optional"  # 非必要
    CONDITIONAL = "conditional"  # 情形必要: required in some cases only


class ServiceItem(Base):
    """ServiceItem — 政务服务事项: a service a department delivers, with the materials it asks for."""

    __tablename__ = "service_items"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)  # 事项编码
    name: Mapped[str] = mapped_column(String(200))
    dept: Mapped[str] = mapped_column(String(18), index=True)  # 实施部门 (implementing department)
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Material(Base):
    """Material — 申请材料 of a service item. A government-issued one may map to a resource and the
    信息项 of it that cover the material (then the exchange can fetch it: 免提交)."""

    __tablename__ = "materials"
    __table_args__ = (
        one_of("source", MaterialSource),
        one_of("necessity", MaterialNecessity),
        CheckConstraint(f"source = '{MaterialSource.GOVERNMENT}' OR resource_code IS NULL", name="mapping"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    service_item_code: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[MaterialSource] = mapped_column(String(16))
    necessity: Mapped[MaterialNecessity] = mapped_column(String(16))
    resource_code: Mapped[str | None] = mapped_column(String(40), index=True)
    items: Mapped[list[str]] = mapped_column(ARRAY(String(50)))  # the 信息项 covering it (empty if unmapped)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --------------------------------------------------------------------------- import jobs (导入任务)


class ImportKind(StrEnum):
    """What a file imports."""

    RESOURCES = "resources"  # catalogue entries (信息资源)
    SERVICE_ITEMS = "service_items"  # 政务服务事项 with their materials


class ImportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ImportJob(Base):
    """ImportJob — 导入任务: an uploaded file, read and checked for its form when it was posted,
    imported by a worker of the registry (all or nothing), with its progress and its error report.

    ``rows`` holds the file's rows until the job ends (then it is cleared); ``claimed_by`` and
    ``lease_until`` say which process runs it and until when; a job ``running`` past its lease was
    left by a dead process and is taken up again (``transfer/jobs.py``)."""

    __tablename__ = "import_jobs"
    __table_args__ = (
        one_of("kind", ImportKind),
        one_of("status", ImportStatus),
        Index("ix_import_jobs_waiting", "created_at", postgresql_where="status IN ('queued', 'running')"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[ImportKind] = mapped_column(String(16))
    dept: Mapped[str] = mapped_column(String(18), index=True)  # the importing department: only it sees the job
    principal: Mapped[dict[str, Any]] = mapped_column(JSONB)  # who posted it: the import runs as them
    status: Mapped[ImportStatus] = mapped_column(String(16))
    file_name: Mapped[str] = mapped_column(String(200))
    header: Mapped[list[str]] = mapped_column(JSONB)
    rows: Mapped[list[Any] | None] = mapped_column(JSONB, deferred=True)  # [[row number, {header: text}], …]
    rows_total: Mapped[int] = mapped_column(Integer)
    rows_checked: Mapped[int] = mapped_column(Integer, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)  # row, column, reason, reason_en
    codes: Mapped[list[str]] = mapped_column(JSONB, default=list)  # what a successful import created
    reason: Mapped[str | None] = mapped_column(Text)  # why it failed, when not for its rows
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
